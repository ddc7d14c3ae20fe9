"""A run directory: the resolved config, `metrics.jsonl` (a line per round), checkpoints and
`summary.json`. Whole files are written to a temporary name and renamed, so a crash never
leaves one half-written."""

import json
import time
from pathlib import Path
from typing import Any

import tomli_w

from fedmeta.atomic import write_atomic, write_atomic_bytes
from fedmeta.config import Config, tomllib
from fedmeta.engine.checkpoint import Selected, save_checkpoint
from fedmeta.errors import UserError
from fedmeta.params import Params


def make_directory(path: Path) -> None:
    """Create `path` and its parents if missing; UserError if it cannot be (a file is there)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"cannot create directory {path}: {error.strerror}") from None


class RunDirectory:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.checkpoints = path / "checkpoints"
        self.metrics_path = path / "metrics.jsonl"
        self.summary_path = path / "summary.json"
        self.config_path = path / "config.toml"

    @classmethod
    def create(cls, config: Config, out: Path | None = None) -> "RunDirectory":
        """A new directory `out`, or `<config.run.out_dir>/<name>-<timestamp>`."""
        if out is None:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            out = Path(config.run.out_dir) / f"{config.name}-{stamp}"
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise UserError(f"run directory {out} already exists and is not an empty directory")
        run = cls(out)
        make_directory(run.checkpoints)
        write_atomic(run.config_path, tomli_w.dumps(config.model_dump(
            exclude_none=True, exclude=config.unread_sections)))
        return run

    @classmethod
    def open(cls, path: Path, command: str) -> "RunDirectory":
        """An existing run directory of rounds, for `fedmeta <command>`: UserError if it holds
        no `config.toml`, or is a vertical run's (scored as it ran: no rounds, no
        checkpoints)."""
        run = cls(path)
        if not run.config_path.is_file():
            raise UserError(f"{path} is not a run directory (no config.toml)")
        try:
            vertical = tomllib.loads(run.config_path.read_text(encoding="utf-8",
                                                                errors="replace")
                                     ).get("federation") == "vertical"
        except tomllib.TOMLDecodeError:
            vertical = False  # whoever reads the config says what is wrong with it
        if vertical:
            raise UserError(f"{path} is a vertical run: its results are in its summary.json "
                            f"(`fedmeta {command}` reads horizontal runs' rounds and "
                            "checkpoints)")
        return run

    def latest_checkpoint(self) -> Path:
        checkpoints = sorted(self.checkpoints.glob("round_*.safetensors"))
        if not checkpoints:
            raise UserError(f"{self.path} has no checkpoint yet")
        return checkpoints[-1]

    def log(self, metrics: dict[str, Any]) -> None:
        with open(self.metrics_path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(metrics) + "\n")

    def metrics_lines(self) -> list[bytes]:
        """The complete lines of `metrics.jsonl` (none if there is none): a run killed while
        logging leaves its last line cut short, without its newline."""
        text = self.metrics_path.read_bytes() if self.metrics_path.exists() else b""
        return text.split(b"\n")[:-1]

    def logged_metrics(self, last_round: int) -> list[dict[str, Any]]:
        """The metrics of rounds 1..`last_round`; UserError if they are not all there."""
        try:
            history = [json.loads(line) for line in self.metrics_lines()[:last_round]]
            complete = [m["round"] for m in history] == list(range(1, last_round + 1))
        except (ValueError, TypeError, KeyError):
            complete = False
        if not complete:
            raise UserError(f"{self.metrics_path} lacks the metrics of rounds 1..{last_round} "
                            f"(the latest checkpoint's)")
        return history

    def trim_metrics(self, last_round: int) -> None:
        """Keep only the metrics of rounds 1..`last_round` (`logged_metrics` must have found
        them): a run killed after its last checkpoint may have logged later rounds, the last
        line perhaps in part."""
        lines = self.metrics_lines()[:last_round]
        write_atomic_bytes(self.metrics_path, b"".join(line + b"\n" for line in lines))

    def checkpoint(self, params: Params, server_state: dict[str, Any], round_index: int,
                   selected: Selected | None = None) -> Path:
        path = self.checkpoints / f"round_{round_index:05d}.safetensors"
        save_checkpoint(path, params, server_state, round_index, selected)
        return path

    def write_summary(self, summary: dict[str, Any]) -> None:
        write_atomic(self.summary_path, json.dumps(summary, indent=2) + "\n")
