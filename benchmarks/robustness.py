"""Accuracy under attack (issue 7): every attack x aggregator at a fraction f of malicious
clients, next to the same aggregators without attack.

Federated ProtoNets on Omniglot (300 clients of random character groups, rotations as
classes), a cohort of 10 a round; meta-test on clients of the evaluation alphabets never seen
in training. The malicious clients are a fixed fraction of the federation drawn from the
seed, so a cohort holds f x 10 of them on average (some rounds more, some none). Each run
appends a JSON line to `--out`; `--table` prints the markdown table of a results file.

    python benchmarks/robustness.py --data ../shared/data --jobs 2 --out results.jsonl
    python benchmarks/robustness.py --table results.jsonl
"""

import time

import torch

from fedmeta.build import build_experiment
from fedmeta.config import load_config
from fedmeta.engine.simulation import Simulation
from parallel import run_sweep, sweep_parser  # beside this script

COMMON = ["data.dataset='omniglot'", "data.partition='random'", "data.num_clients=300",
          "data.rotations=true", "model.hidden=16", "task.ways=5", "task.shots=1",
          "task.queries=5", "eval.ways=5", "eval.shots=1", "eval.queries=15", "eval.every=0",
          "learner.algorithm='protonet'", "learner.local_steps=2", "learner.lr=0.002",
          "server.clients_per_round=10", "server.optimizer='sgd'", "server.lr=1.0"]
AGGREGATORS = {  # trimmed mean and Krum assume aggregation.byzantine_fraction = 0.2
    "mean": ["aggregation.rule='mean'"],
    "mean + norm bound": ["aggregation.rule='mean'", "aggregation.norm_bound=0.3"],
    "median": ["aggregation.rule='median'"],
    "trimmed mean": ["aggregation.rule='trimmed-mean'"],
    "krum": ["aggregation.rule='krum'"],
    "multi-krum": ["aggregation.rule='multi-krum'"],
}
ATTACKS = ["none", "sign-flip", "scaling", "gaussian", "label-flip"]


def simulate(overrides: list[str], data: str, rounds: int, episodes: int,
             callbacks: list = ()) -> dict:
    """The workload (`COMMON`) with `overrides`, on one torch thread: its training seconds and
    its meta-test metrics."""
    torch.set_num_threads(1)
    simulation = Simulation(build_experiment(load_config(None, COMMON + overrides + [
        f"data.path='{data}/omniglot.npz'", f"server.rounds={rounds}",
        f"eval.final_episodes={episodes}"])))
    start = time.perf_counter()
    params = simulation.run(callbacks)
    return {"seconds": round(time.perf_counter() - start, 1),
            **simulation.evaluate(params, episodes)}


def run_one(job: tuple[str, str, float, str, int, int]) -> dict:
    aggregator, attack, fraction, data, rounds, episodes = job
    return {"aggregator": aggregator, "attack": attack, "fraction": fraction, "rounds": rounds,
            **simulate(AGGREGATORS[aggregator] + [f"attack.kind='{attack}'",
                                                  f"attack.fraction={fraction}"],
                       data, rounds, episodes)}


def table(rows: list[dict]) -> str:
    """Accuracy % +- 95% CI: a row per attack and fraction, a column per aggregator."""
    cell = {(r["attack"], r["fraction"], r["aggregator"]): r for r in rows}
    lines = ["| attack | f | " + " | ".join(AGGREGATORS) + " |",
             "| --- | --- |" + " --- |" * len(AGGREGATORS)]
    for attack, fraction in sorted({(r["attack"], r["fraction"]) for r in rows},
                                   key=lambda key: (ATTACKS.index(key[0]), key[1])):
        values = [cell.get((attack, fraction, a)) for a in AGGREGATORS]
        lines.append(f"| {attack} | {fraction:.0%} | " + " | ".join(
            f"{100 * r['test_accuracy']:.1f} ± {100 * r['test_ci95']:.1f}" if r else ""
            for r in values) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = sweep_parser(__doc__)
    parser.add_argument("--fractions", nargs="+", type=float, default=[0.1, 0.2])
    parser.add_argument("--aggregators", nargs="+", default=list(AGGREGATORS),
                        choices=AGGREGATORS)
    parser.add_argument("--attacks", nargs="+", default=ATTACKS, choices=ATTACKS)
    run_sweep(parser, run_one, lambda args: [
        (aggregator, attack, 0.0 if attack == "none" else fraction, args.data, args.rounds,
         args.episodes)
        for attack in args.attacks
        for fraction in ([0.0] if attack == "none" else args.fractions)
        for aggregator in args.aggregators], table)


if __name__ == "__main__":
    main()
