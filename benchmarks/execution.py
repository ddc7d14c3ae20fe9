"""The execution rule's measurement on this machine's device: seconds per round of each bench
workload with the per-client loop and with vmap at several chunk sizes (clients vmapped at
once), in each precision (`run.precision`), the same rounds interleaved so the machine's slow
spells hit them alike; one JSON line per workload, with each one's time over the fp32 loop's.

    .venv/bin/python benchmarks/execution.py [--rounds 3] [--chunks 4,16,64] \
        [--precisions fp32,bf16] [--config FILE.toml --set KEY=VALUE ...]

`--config` measures that config's round (named by the file) instead of the bench workloads,
e.g. configs/shakespeare_maml.toml, whose data a bench workload cannot assume.

On the CPU, auto picks the loop for convolutional models and vmap otherwise; on a GPU it picks
vmap (cohort.choose_execution): this script is what confirms or corrects that half.
"""

import argparse
import dataclasses
import json
import statistics
from pathlib import Path

from fedmeta.bench.measure import timed, with_execution
from fedmeta.bench.workloads import WORKLOADS
from fedmeta.build import build_experiment
from fedmeta.config import load_config, validate
from fedmeta.device import describe_device


def with_run(simulation, **settings):
    """`simulation` with `run` settings changed (chunk_size, precision)."""
    config = simulation.config
    run = config.run.model_copy(update=settings)
    return type(simulation)(dataclasses.replace(simulation.experiment,
                                                config=config.model_copy(update={"run": run})))


def measure(name: str, config, rounds: int, chunks: list[int], precisions: list[str]) -> dict:
    experiment = build_experiment(config)
    vmapped = with_execution(experiment, "vmap")
    executions = {}
    for precision in precisions:
        suffix = "" if precision == "fp32" else f"/{precision}"
        executions[f"loop{suffix}"] = with_run(with_execution(experiment, "loop"),
                                               precision=precision)
        executions.update({f"vmap/{c}{suffix}": with_run(vmapped, chunk_size=c,
                                                         precision=precision)
                           for c in chunks})
    params = experiment.learner.init_params()
    state = experiment.pipeline.init(params)
    times: dict[str, list[float]] = {key: [] for key in executions}
    for round_index in range(rounds + 1):  # round 0 warms up
        for key, simulation in executions.items():
            seconds, _ = timed(simulation.round, round_index, params, state)
            if round_index:
                times[key].append(seconds)
    loop = statistics.median(times["loop"])
    return {"workload": name, "device": describe_device(experiment.learner.device),
            "rounds": rounds, "seconds_per_round": {k: statistics.median(v)
                                                    for k, v in times.items()},
            "over_loop": {k: statistics.median(v) / loop for k, v in times.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--chunks", default="4,16,64")
    parser.add_argument("--precisions", default="fp32")
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--config", help="a config file to measure instead of the workloads")
    parser.add_argument("--set", nargs="*", default=[], help="overrides of --config")
    args = parser.parse_args()
    chunks = [int(c) for c in args.chunks.split(",")]
    configs = ({Path(args.config).stem: load_config(args.config, args.set)} if args.config else
               {name: validate(WORKLOADS[name].config) for name in args.workloads.split(",")})
    for name, config in configs.items():
        print(json.dumps(measure(name, config, args.rounds, chunks, args.precisions.split(","))),
              flush=True)


if __name__ == "__main__":
    main()
