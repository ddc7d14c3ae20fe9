"""Baseline for fedmeta's in-process simulator: seconds per round of Flower's simulation engine
(Ray backend, flwr Message API) running fedmeta's own `client_update` on every sampled client.

Each round Flower's FedAvg samples `server.clients_per_round` of `data.num_clients` virtual
SuperNodes, sends them the global params, each ClientApp returns global + delta weighted by
its number of examples, and FedAvg averages them: fedmeta's weighted mean of deltas with a
server SGD step of lr 1 (cohorts are drawn by Flower, uniformly without replacement).
"""
# ruff: noqa: E402 (flwr reads its environment variables on import)

import logging
import os
import time
from functools import lru_cache
from typing import Any

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")
os.environ.setdefault("FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION", "1")
os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")  # no GPUs are asked for

import flwr
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg
from flwr.simulation import run_simulation

from fedmeta.build import build_experiment
from fedmeta.engine.experiment import Experiment
from fedmeta.config import Config
from fedmeta.seeding import client_generator
from fedmeta.params import Params, tree_add


@lru_cache(maxsize=1)
def _experiment(config_json: str) -> Experiment:
    """The experiment of a Ray worker process, built once from the run's config."""
    torch.set_num_threads(1)
    return build_experiment(Config.model_validate_json(config_json))


def _client_app(config_json: str) -> ClientApp:
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        experiment = _experiment(config_json)
        pid = int(context.node_config["partition-id"])
        server_round = int(msg.content["config"]["server-round"])
        params = dict(msg.content["arrays"].to_torch_state_dict())
        update = experiment.learner.client_update(
            params, experiment.train.client(pid),
            client_generator(experiment.config.seed, server_round, pid))
        metrics = MetricRecord({"num-examples": update.weight, "loss": update.loss})
        return Message(RecordDict({"arrays": ArrayRecord(tree_add(params, update.delta)),
                                   "metrics": metrics}), reply_to=msg)

    return app


class _TimedFedAvg(FedAvg):
    """FedAvg that records `time.perf_counter()` at the start of each round."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.round_starts: list[float] = []

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> list[Message]:
        self.round_starts.append(time.perf_counter())
        return list(super().configure_train(server_round, arrays, config, grid))


def _simulate(experiment: Experiment, rounds: int, num_cpus: int) -> tuple[list[float], Params]:
    """Run `rounds` Flower rounds; return each round's wall seconds and the final params."""
    num_clients = experiment.train.num_clients
    cohort = min(experiment.config.server.clients_per_round, num_clients)
    strategy = _TimedFedAvg(fraction_train=cohort / num_clients, fraction_evaluate=0.0,
                            min_train_nodes=cohort, min_available_nodes=num_clients)
    final: list[Params] = []
    server_app = ServerApp()

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        result = strategy.start(grid, ArrayRecord(experiment.learner.init_params()),
                                num_rounds=rounds)
        strategy.round_starts.append(time.perf_counter())
        final.append(dict(result.arrays.to_torch_state_dict()))

    logger = logging.getLogger("flwr")
    level = logger.level
    logger.setLevel(logging.ERROR)  # not its notice that run_simulation is deprecated
    try:
        run_simulation(server_app=server_app,
                       client_app=_client_app(experiment.config.model_dump_json()),
                       num_supernodes=num_clients,
                       backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                                       "init_args": {"num_cpus": num_cpus,
                                                     "include_dashboard": False,
                                                     "logging_level": "ERROR",
                                                     "log_to_driver": False}})
    finally:
        logger.setLevel(level)
    starts = strategy.round_starts
    return [end - start for start, end in zip(starts, starts[1:])], final[0]


def flower_seconds_per_round(experiment: Experiment, rounds: int = 3, warmup_rounds: int = 1,
                             num_cpus: int = 2) -> dict[str, Any]:
    """Mean wall seconds of a Flower round after `warmup_rounds` (Ray start-up, actor warm-up),
    with `num_cpus` Ray CPUs, one per ClientApp actor."""
    seconds, _ = _simulate(experiment, warmup_rounds + rounds, num_cpus)
    measured = seconds[warmup_rounds:]
    return {"seconds_per_round": sum(measured) / len(measured), "rounds": len(measured),
            "clients_per_round": min(experiment.config.server.clients_per_round,
                                     experiment.train.num_clients),
            "flwr_version": flwr.__version__}


def flower_final_params(experiment: Experiment, rounds: int = 1, num_cpus: int = 2) -> Params:
    """The global params after `rounds` Flower rounds from `experiment.learner.init_params()`."""
    return _simulate(experiment, rounds, num_cpus)[1]
