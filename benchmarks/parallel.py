"""Benchmark runs in parallel processes, each result printed and appended to a JSON-lines file
as it completes (a long sweep keeps what it has if stopped); and the command line the sweeps
share: run into `--out`, or with `--table`, only print the table of a results file."""

import argparse
import json
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path
from typing import Any


def run_jobs(run_one: Callable[[Any], dict], jobs: Sequence[Any], workers: int,
             out: Path | None) -> list[dict]:
    """`run_one(job)` for every job, `workers` at a time in fresh (spawned) processes; the
    results in the order they complete, each also appended to `out` if given."""
    results = []
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        for future in as_completed([pool.submit(run_one, job) for job in jobs]):
            results.append(future.result())
            print(json.dumps(results[-1]), flush=True)
            if out is not None:
                with open(out, "a") as handle:
                    handle.write(json.dumps(results[-1]) + "\n")
    return results


def add_result_options(parser: argparse.ArgumentParser) -> None:
    """The options of a benchmark whose runs take config overrides: --set, --table, --out."""
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                        help="config overrides after the setting's and algorithm's")
    parser.add_argument("--table", type=Path, help="only print the tables of this results file")
    parser.add_argument("--out", type=Path, help="append one JSON line per run here")


def printed_table(args: argparse.Namespace, table: Callable[[list[dict]], str]) -> bool:
    """With --table, print the table of that results file and return True."""
    if args.table:
        print(table([json.loads(line) for line in args.table.read_text().splitlines()]))
    return bool(args.table)


def sweep_parser(doc: str) -> argparse.ArgumentParser:
    """A sweep's options: --table, --data, --rounds, --episodes, --jobs, --out (add its own)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--table", type=Path, help="only print the table of this results file")
    parser.add_argument("--data", help="folder with omniglot.npz")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--episodes", type=int, default=300)
    parser.add_argument("--jobs", type=int, default=2, help="runs in parallel, one thread each")
    parser.add_argument("--out", type=Path)
    return parser


def run_sweep(parser: argparse.ArgumentParser, run_one: Callable[[Any], dict],
              jobs: Callable[[argparse.Namespace], Sequence[Any]],
              table: Callable[[list[dict]], str]) -> None:
    """Print the table of `--table`'s results, or run `jobs(args)` into `--out` and print
    theirs."""
    args = parser.parse_args()
    if printed_table(args, table):
        return
    if not (args.data and args.out):
        parser.error("--data and --out are needed to run")
    print(table(run_jobs(run_one, jobs(args), args.jobs, args.out)))
