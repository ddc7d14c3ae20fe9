"""Benchmark runs in parallel processes, each result printed and appended to a JSON-lines file
as it completes (a long sweep keeps what it has if stopped)."""

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
