"""Run directories as a report reads them: the config, each complete round's metrics and the
summary (none while a run is in progress). Bad input is one line (UserError); fields of an
unexpected type are treated as absent."""

import itertools
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from fedmeta.config import tomllib
from fedmeta.engine.rundir import RunDirectory
from fedmeta.errors import UserError


def is_number(value: Any) -> bool:
    """A finite number a float holds (JSON also has NaN, Infinity and integers of any size)."""
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and abs(value) <= sys.float_info.max)


@dataclass(frozen=True)
class Run:
    """A run directory as a report shows it."""

    path: Path
    name: str  # the config's
    label: str  # the name, with the directory where names are ambiguous
    config_text: str
    metrics: tuple[dict[str, Any], ...]  # one per complete round, in order
    summary: dict[str, Any] | None  # None: in progress

    def rows(self, *keys: str) -> list[tuple[float, ...]]:
        """(round, values...) of the rounds whose metrics hold a number under every key."""
        return [(m["round"], *(float(m[k]) for k in keys)) for m in self.metrics
                if all(is_number(m.get(k)) for k in keys)]

    def bytes_communicated(self) -> dict[int, float] | None:
        """Round -> bytes sent to and received from the clients up to its end; None unless
        every round's metrics count them (`bytes_down`, `bytes_up`)."""
        rows = self.rows("bytes_down", "bytes_up")
        if len(rows) != len(self.metrics):
            return None
        return dict(zip([r[0] for r in rows], itertools.accumulate(d + u for _, d, u in rows)))

    def summary_field(self, *keys: str) -> Any:
        """`summary[keys[0]][keys[1]]...`, None if absent (or no summary yet)."""
        value: Any = self.summary
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        return value

    @property
    def rounds(self) -> int:
        """The rounds trained: the summary's, or the last logged while in progress."""
        rounds = self.summary_field("rounds")
        return rounds if is_number(rounds) else self.metrics[-1]["round"]

    @property
    def epsilon(self) -> float | None:
        """User-level DP spent: the summary's, or the last logged round's while in progress."""
        if self.summary is not None:
            epsilon = self.summary_field("privacy", "epsilon")
            return epsilon if is_number(epsilon) else None
        rows = self.rows("epsilon")
        return rows[-1][1] if rows else None

    def per_client(self, key: str) -> list[float] | None:
        """Each held-out client's final accuracy under the summary's `meta_test.<key>`
        (`per_client_accuracy`, `personal_per_client_accuracy`), if the summary has them."""
        values = self.summary_field("meta_test", key)
        if isinstance(values, list) and values and all(is_number(v) for v in values):
            return values
        return None


def read_metrics(run: RunDirectory) -> tuple[dict[str, Any], ...]:
    """The complete rounds' metrics; a last line cut short (a run killed mid-write) is left
    out."""
    metrics = []
    for number, line in enumerate(run.metrics_lines(), 1):
        try:
            row = json.loads(line)
        except ValueError:
            row = None
        if not isinstance(row, dict) or not is_number(row.get("round")):
            raise UserError(f"{run.metrics_path}: line {number} is not a round's metrics "
                            "(a JSON object with its round)")
        metrics.append(row)
    if not metrics:
        raise UserError(f"{run.path} has no complete round in metrics.jsonl yet")
    return tuple(metrics)


def read_summary(run: RunDirectory) -> dict[str, Any] | None:
    if not run.summary_path.exists():
        return None
    try:
        summary = json.loads(run.summary_path.read_bytes())
    except ValueError:
        summary = None
    if not isinstance(summary, dict):
        raise UserError(f"{run.summary_path} is not a JSON object")
    return summary


def config_name(path: Path, text: str) -> str:
    """The `name` in a config.toml's text ("run" if it has none)."""
    try:
        name = tomllib.loads(text).get("name")
    except tomllib.TOMLDecodeError as error:
        raise UserError(f"{path} is not a TOML config: {error}") from None
    return name if isinstance(name, str) else "run"


def read_run(path: Path) -> Run:
    """The run in directory `path`, labelled by its name; UserError if it is no run directory
    or has no complete round yet."""
    run = RunDirectory.open(path, "report")
    try:
        config_text = run.config_path.read_bytes().decode("utf-8", errors="replace")
        name = config_name(run.config_path, config_text)
        return Run(path, name, name, config_text, read_metrics(run), read_summary(run))
    except OSError as error:
        raise UserError(f"cannot read {error.filename}: {error.strerror}") from None


def read_runs(paths: Sequence[Path]) -> list[Run]:
    """The runs in `paths`, labelled by their config's name, with their directory where two
    runs have the same name."""
    runs = [read_run(path) for path in paths]
    return [replace(run, label=label(run, runs)) for run in runs]


def label(run: Run, runs: Sequence[Run]) -> str:
    """`run`'s name, or with its directory's name (or path) if that tells it from the rest."""
    namesakes = [r for r in runs if r.name == run.name]
    if len(namesakes) == 1:
        return run.name
    directory = run.path.resolve().name
    if sum(r.path.resolve().name == directory for r in namesakes) == 1:
        return f"{run.name} ({directory})"
    return f"{run.name} ({run.path})"
