"""Things that happen after every round: log metrics, checkpoint, show progress."""

import math
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from fedmeta.engine.rundir import RunDirectory
from fedmeta.params import Params


class MetricsLogger:
    """Appends each round's metrics to the run's `metrics.jsonl`."""

    def __init__(self, run: RunDirectory) -> None:
        self.run = run

    def __call__(self, round_index: int, params: Params, server_state: dict[str, Any],
                 metrics: dict[str, Any]) -> None:
        self.run.log(metrics)


class Checkpointer:
    """Saves a checkpoint every `every` rounds and after the last one."""

    def __init__(self, run: RunDirectory, every: int, last_round: int) -> None:
        self.run, self.every, self.last_round = run, every, last_round

    def __call__(self, round_index: int, params: Params, server_state: dict[str, Any],
                 metrics: dict[str, Any]) -> None:
        if round_index == self.last_round or (self.every and round_index % self.every == 0):
            self.run.checkpoint(params, server_state, round_index)


class ProgressBar:
    """A rich progress bar showing the round, the last loss and test accuracy, and the ETA."""

    def __init__(self, rounds: int, start_round: int = 1) -> None:
        self.progress = Progress(
            TextColumn("[bold]round"), MofNCompleteColumn(), BarColumn(),
            TextColumn("{task.fields[status]}"), TimeRemainingColumn(), transient=False)
        self.task = self.progress.add_task("train", total=rounds, completed=start_round - 1,
                                           status="")
        self.accuracy = math.nan

    def __enter__(self) -> "ProgressBar":
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def __call__(self, round_index: int, params: Params, server_state: dict[str, Any],
                 metrics: dict[str, Any]) -> None:
        self.accuracy = metrics.get("test_accuracy", self.accuracy)
        status = f"loss {metrics.get('loss', math.nan):.3f}  test acc {100 * self.accuracy:.1f}%"
        self.progress.update(self.task, completed=round_index, status=status)
