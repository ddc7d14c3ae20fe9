"""Things that happen after every round: log metrics, checkpoint, show progress."""

import math
import time
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from fedmeta.config import Config
from fedmeta.engine.client_state import CLIENTS
from fedmeta.engine.rundir import RunDirectory
from fedmeta.engine.simulation import StopTraining
from fedmeta.params import Params


class MetricsLogger:
    """Appends each round's metrics to the run's `metrics.jsonl`."""

    def __init__(self, run: RunDirectory) -> None:
        self.run = run

    def __call__(self, round_index: int, params: Params, server_state: dict[str, Any],
                 metrics: dict[str, Any]) -> None:
        self.run.log(metrics)


class TensorBoardLogger:
    """Writes each round's numeric metrics as TensorBoard scalars into `directory`, dropping
    any logged from round `start_round` on by a run that was stopped and resumed. Needs the
    tensorboard package (`run.tensorboard` checks it is installed)."""

    def __init__(self, directory: Path, start_round: int = 1) -> None:
        from torch.utils.tensorboard import SummaryWriter  # imports tensorboard, optional

        self.writer = SummaryWriter(str(directory), purge_step=start_round)

    def __enter__(self) -> "TensorBoardLogger":
        return self

    def __exit__(self, *exc: object) -> None:
        self.writer.close()

    def __call__(self, round_index: int, params: Params, server_state: dict[str, Any],
                 metrics: dict[str, Any]) -> None:
        for key, value in metrics.items():
            if key != "round" and isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(key, value, round_index)


LOWER_IS_BETTER = frozenset({"val_mae"})


def selection_metric(config: Config) -> str:
    """The meta-validation metric that model selection and early stopping read: new users'
    MAE on ratings, accuracy otherwise."""
    return "val_mae" if config.data.rates else "val_accuracy"


def score(metric: str, metrics: dict[str, Any]) -> float:
    """`metrics[metric]` signed so that higher is better (-inf where it is absent)."""
    if metric not in metrics:
        return -math.inf
    return -metrics[metric] if metric in LOWER_IS_BETTER else metrics[metric]


class BestRound:
    """Model selection on the meta-validation clients: the round whose `metric` was the best
    so far (the first of equals), its params, its clients' personal states (None: the learner
    keeps none) and its metrics. The round a run keeps is this one, so it is chosen by what
    the meta-validation clients scored, never the meta-test's."""

    def __init__(self, metric: str = "val_accuracy") -> None:
        self.metric = metric
        self.round, self.best = 0, -math.inf
        self.params: Params | None = None
        self.states: Params | None = None
        self.metrics: dict[str, Any] = {}

    def __call__(self, round_index: int, params: Params, server_state: dict[str, Any],
                 metrics: dict[str, Any]) -> None:
        if score(self.metric, metrics) > self.best:
            self.round, self.best, self.params = round_index, score(self.metric, metrics), params
            self.states = server_state.get(CLIENTS)
            self.metrics = {k: v for k, v in metrics.items() if k.startswith("val_")}


class Checkpointer:
    """Saves a checkpoint every `every` rounds (0: never) and, on `finish()`, the last round,
    each with the round `selection` has chosen so far and its params;
    `saved_round`: the round of the checkpoint a resumed run started from (0: none)."""

    def __init__(self, run: RunDirectory, every: int, saved_round: int = 0,
                 selection: BestRound | None = None) -> None:
        self.run, self.every, self.selection = run, every, selection
        self.round = self.saved_round = saved_round  # the last round seen
        self.last: tuple[Params, dict[str, Any]] | None = None  # its params and server state

    def __call__(self, round_index: int, params: Params, server_state: dict[str, Any],
                 metrics: dict[str, Any]) -> None:
        self.round, self.last = round_index, (params, server_state)
        if self.every and round_index % self.every == 0:
            self.save()

    def save(self) -> None:
        selected = None
        if self.selection is not None and self.selection.params is not None:
            selected = (self.selection.round, self.selection.params, self.selection.states)
        self.run.checkpoint(*self.last, self.round, selected)
        self.saved_round = self.round

    def finish(self) -> None:
        if self.round != self.saved_round:
            self.save()


class EarlyStopping:
    """Stops when `metric` (on the meta-validation clients) has not improved by `min_delta`
    for `patience` evaluations."""

    def __init__(self, patience: int, metric: str = "val_accuracy", min_delta: float = 0.0):
        self.patience, self.metric, self.min_delta = patience, metric, min_delta
        self.best, self.stale = -math.inf, 0

    def __call__(self, round_index: int, params: Params, server_state: dict[str, Any],
                 metrics: dict[str, Any]) -> None:
        if self.metric not in metrics:
            return
        if score(self.metric, metrics) > self.best + self.min_delta:
            self.best, self.stale = score(self.metric, metrics), 0
            return
        self.stale += 1
        if self.stale >= self.patience:
            raise StopTraining(f"{self.metric} did not improve for {self.patience} evaluations")


class TimeBudget:
    """Stops once `seconds` of wall-clock time have passed since it was created: a resumed
    run's budget counts the resumed process's time only."""

    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds

    def __call__(self, round_index: int, params: Params, server_state: dict[str, Any],
                 metrics: dict[str, Any]) -> None:
        if time.monotonic() >= self.deadline:
            raise StopTraining("time budget spent")


class ProgressBar:
    """A rich progress bar showing the round, the last loss and validation accuracy, the privacy
    spent (epsilon, with user-level DP) and the ETA."""

    def __init__(self, rounds: int, start_round: int = 1) -> None:
        self.progress = Progress(
            TextColumn("[bold]round"), MofNCompleteColumn(), BarColumn(),
            TextColumn("{task.fields[status]}"), TimeRemainingColumn(), transient=False)
        self.task = self.progress.add_task("train", total=rounds, completed=start_round - 1,
                                           status="")
        self.accuracy = self.mae = math.nan

    def __enter__(self) -> "ProgressBar":
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def __call__(self, round_index: int, params: Params, server_state: dict[str, Any],
                 metrics: dict[str, Any]) -> None:
        self.accuracy = metrics.get("val_accuracy", self.accuracy)
        self.mae = metrics.get("val_mae", self.mae)
        validation = (f"val MAE {self.mae:.3f}" if "val_mae" in metrics or not math.isnan(self.mae)
                      else f"val acc {100 * self.accuracy:.1f}%")
        status = f"loss {metrics.get('loss', math.nan):.3f}  {validation}"
        if "epsilon" in metrics:
            status += f"  ε {metrics['epsilon']:.2f}"
        self.progress.update(self.task, completed=round_index, status=status)
