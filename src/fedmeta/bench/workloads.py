"""The named workloads of `fedmeta bench`: one overhead-bound, two compute-bound."""

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Workload:
    description: str
    config: dict[str, Any]


def omniglot_maml(algorithm: str) -> dict[str, Any]:
    """Conv-4 on the bundled Omniglot, 5-way 1-shot 15-query, a cohort of 5, 4 tasks per step."""
    return {"data": {"dataset": "omniglot", "path": "bundled", "rotations": True},
            "task": {"ways": 5, "shots": 1, "queries": 15},
            "learner": {"algorithm": algorithm, "tasks_per_step": 4, "inner_lr": 0.1},
            "server": {"clients_per_round": 5}}


WORKLOADS = {
    "fedavg-synthetic": Workload(
        "overhead-bound: FedAvg, LEAF Synthetic(1,1), 1,000 clients, cohort 100, MLP 60-64-64-10,"
        " 5 local SGD steps of 32 examples",
        {"data": {"dataset": "synthetic", "num_clients": 1000}, "model": {"name": "mlp"},
         "task": {"labels": "global", "shots": 5, "queries": 5},  # every client evaluated
         "eval": {"shots": 5, "queries": 5},
         "learner": {"algorithm": "fedavg", "local_steps": 5, "batch_size": 32,
                     "optimizer": "sgd", "lr": 0.05},
         "server": {"clients_per_round": 100}}),
    "maml-omniglot": Workload("compute-bound: FedMeta-MAML (second order), Conv-4, Omniglot 5w1s",
                              omniglot_maml("maml")),
    "fomaml-omniglot": Workload("compute-bound: FedMeta first-order MAML, Conv-4, Omniglot 5w1s",
                                omniglot_maml("fomaml")),
}
