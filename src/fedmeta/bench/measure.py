"""Time fedmeta's rounds and their baselines on the same clients and batches, interleaved
round by round (these machines are noisy: only ratios measured in one run compare)."""

import dataclasses
import resource
import statistics
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from typing import Any

from fedmeta.bench.baselines import (ceiling_seconds, functorch_round, naive_round,
                                     supports_functorch, supports_naive)
from fedmeta.bench.workloads import WORKLOADS
from fedmeta.build import build_experiment
from fedmeta.engine.experiment import Experiment
from fedmeta.config import validate
from fedmeta.data import Episodes, NotEnoughData
from fedmeta.device import describe_device, synchronize
from fedmeta.engine.cohort import choose_execution
from fedmeta.seeding import client_generator
from fedmeta.engine.simulation import Simulation


def with_execution(experiment: Experiment, execution: str) -> Simulation:
    run = experiment.config.run.model_copy(update={"execution": execution})
    config = experiment.config.model_copy(update={"run": run})
    return Simulation(dataclasses.replace(experiment, config=config))


def timed(fn, *args) -> tuple[float, Any]:
    synchronize()
    start = time.perf_counter()
    result = fn(*args)
    synchronize()
    return time.perf_counter() - start, result


def round_data(simulation: Simulation, round_index: int) -> tuple[list, list, list]:
    """The round's clients, their fresh generators, and their batches (drawn from copies, on
    the learner's device)."""
    config, experiment = simulation.config, simulation.experiment
    train, learner = experiment.train, experiment.learner
    cohort = simulation.cohort(round_index).tolist()
    clients = [train.client(c) for c in cohort]
    batches = []
    for client, c in zip(clients, cohort):
        try:
            batches.append(learner.on_device(learner.local_batches(
                client, client_generator(config.seed, round_index, c))))
        except NotEnoughData:
            pass
    return clients, [client_generator(config.seed, round_index, c) for c in cohort], batches


def tasks(batches: list[list[Any]]) -> int:
    """Episodes (or minibatches) a round trains on."""
    return sum(len(b) if isinstance(b, Episodes) else 1 for client in batches for b in client)


def measure(name: str, rounds: int = 3, flower: bool = True) -> dict[str, Any]:
    """Seconds per round (median over `rounds` after one warm-up round) of fedmeta with the
    execution `auto` picks, the other execution, the compute ceiling, the naive loop and,
    when `flower` and flwr is installed, Flower's simulation; and their ratios (medians of
    round-by-round ratios, but Flower's)."""
    experiment = build_experiment(validate(WORKLOADS[name].config))
    config, learner = experiment.config, experiment.learner
    params = learner.init_params()
    chosen = choose_execution(learner.model, learner.device)
    other = "vmap" if chosen == "loop" else "loop"
    simulations = {e: with_execution(experiment, e) for e in (chosen, other)}
    chunk = 1 if chosen == "loop" else config.run.chunk_size
    times: dict[str, list[float]] = {"fedmeta": [], "other_execution": [], "ceiling": []}
    if supports_naive(learner):
        times["naive_loop"] = []
    if supports_functorch(learner):
        times["functorch_maml"] = []
    state, work = experiment.pipeline.init(params), []
    for round_index in range(rounds + 1):
        clients, generators, batches = round_data(simulations[chosen], round_index)
        seconds, (new_params, state, _) = timed(simulations[chosen].round, round_index, params,
                                                state)
        sample = {"fedmeta": seconds,
                  "other_execution": timed(simulations[other].round, round_index, params,
                                           state)[0],
                  "ceiling": ceiling_seconds(learner, batches, chunk)}
        if "naive_loop" in times:
            sample["naive_loop"] = timed(naive_round, learner, params, clients, generators,
                                         config.learner.optimizer, config.learner.lr)[0]
        if "functorch_maml" in times:
            sample["functorch_maml"] = timed(functorch_round, learner, params, clients,
                                             generators, config.learner.optimizer,
                                             config.learner.lr)[0]
        params = new_params
        if round_index:  # round 0 warms up
            for key, value in sample.items():
                times[key].append(value)
            work.append((len(batches), tasks(batches)))
    seconds = {key: statistics.median(values) for key, values in times.items()}
    ratios = {"fedmeta_over_ceiling": paired_ratio(times["fedmeta"], times["ceiling"]),
              f"{other}_over_{chosen}": paired_ratio(times["other_execution"], times["fedmeta"])}
    if "naive_loop" in times:
        ratios["naive_loop_over_fedmeta"] = paired_ratio(times["naive_loop"], times["fedmeta"])
    if "functorch_maml" in times:  # > 1: fedmeta's tasks/s above the hand-written vmap MAML's
        ratios["functorch_maml_over_fedmeta"] = paired_ratio(times["functorch_maml"],
                                                             times["fedmeta"])
    if flower:
        seconds.update(flower_seconds(experiment, rounds))
    fedmeta = seconds["fedmeta"]
    if "flower_simulation" in seconds:  # a run of its own: a ratio of medians
        ratios["flower_simulation_over_fedmeta"] = seconds["flower_simulation"] / fedmeta
    clients_per_round = statistics.mean(c for c, _ in work)
    return {
        "workload": name, "description": WORKLOADS[name].description,
        "device": describe_device(learner.device), "execution": chosen,
        "rounds": rounds, "clients_per_round": clients_per_round,
        "seconds_per_round": seconds,
        "rounds_per_s": 1 / fedmeta,
        "client_updates_per_s": clients_per_round / fedmeta,
        "tasks_per_s": statistics.mean(t for _, t in work) / fedmeta,
        "ratios": ratios,
    }


def paired_ratio(numerators: list[float], denominators: list[float]) -> float:
    """The median of round-by-round ratios (each pair timed back to back, so slow spells of
    the machine cancel)."""
    return statistics.median(a / b for a, b in zip(numerators, denominators))


def flower_seconds(experiment: Experiment, rounds: int) -> dict[str, float]:
    """Flower's simulation on the same experiment, or nothing when flwr is not installed."""
    try:
        from fedmeta.bench.flower_baseline import flower_seconds_per_round
    except ImportError:
        return {}
    return {"flower_simulation": flower_seconds_per_round(experiment, rounds)["seconds_per_round"]}


def run_benchmarks(names: list[str], rounds: int, flower: bool) -> Iterator[dict[str, Any]]:
    """Each named workload's result (`measure`, or `scale` for "scale"), in order."""
    for name in names:
        yield scale(rounds=rounds) if name == "scale" else measure(name, rounds, flower)


def scale(sizes: tuple[int, ...] = (1_000, 10_000, 100_000), rounds: int = 5) -> dict[str, Any]:
    """fedavg-synthetic's round time as the federation grows and the cohort stays 100 (the
    sizes' rounds interleaved, so machine noise hits them alike), and the peak RSS of a fresh
    process holding all of them: cost should follow the cohort, not the federation."""
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        rows, peak = pool.submit(scale_rows, sizes, rounds).result()
    per_round = [row["seconds_per_round"] for row in rows]
    return {"workload": "scale", "cohort": 100, "rows": rows, "peak_rss_mb": peak,
            "slowest_over_fastest": max(per_round) / min(per_round)}


def scale_rows(sizes: tuple[int, ...], rounds: int) -> tuple[list[dict[str, Any]], float]:
    workload = WORKLOADS["fedavg-synthetic"].config
    simulations = [Simulation(build_experiment(validate(
        {**workload, "data": {**workload["data"], "num_clients": size}}))) for size in sizes]
    params = simulations[0].experiment.learner.init_params()
    states = [s.experiment.pipeline.init(params) for s in simulations]
    times: list[list[float]] = [[] for _ in sizes]
    for round_index in range(rounds + 1):  # round 0 warms up
        for i, simulation in enumerate(simulations):
            seconds, (_, states[i], _) = timed(simulation.round, round_index, params, states[i])
            if round_index:
                times[i].append(seconds)
    rows = [{"clients": size, "seconds_per_round": statistics.median(t)}
            for size, t in zip(sizes, times)]
    return rows, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
