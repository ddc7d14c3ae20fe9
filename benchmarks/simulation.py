"""Simulation speed (issue 4): every `fedmeta bench` workload, timed round by round against
its baselines in the same run, each result appended as a JSON line to `--out`.

    python benchmarks/simulation.py --rounds 8 --out benchmarks/results/simulation-local.jsonl

Workloads (`fedmeta.bench.workloads`): fedavg-synthetic (overhead-bound), maml-omniglot and
fomaml-omniglot (compute-bound), scale (1k, 10k, 100k clients, cohort 100). Baselines: the
compute ceiling, the other cohort execution, a naive per-client PyTorch loop, and Flower's
simulation when flwr is installed (`--no-flower` to skip it).
"""

import argparse
import json
from pathlib import Path

from fedmeta.bench.measure import run_benchmarks
from fedmeta.bench.workloads import WORKLOADS
from fedmeta.cli import bench_report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workloads", nargs="*", default=[*WORKLOADS, "scale"])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--no-flower", action="store_true")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    for result in run_benchmarks(args.workloads, args.rounds, flower=not args.no_flower):
        print(bench_report(result), flush=True)
        if args.out:
            with args.out.open("a") as out:
                out.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
