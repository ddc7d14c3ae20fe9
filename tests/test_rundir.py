import json

import pytest

from fedmeta.atomic import atomic_path, write_atomic
from fedmeta.engine.rundir import RunDirectory
from fedmeta.errors import UserError

LINES = [json.dumps({"round": r, "loss": 1.0 / r, "seconds": 0.1}).encode() + b"\n"
         for r in range(1, 6)]


def run_with_metrics(tmp_path, content: bytes) -> RunDirectory:
    run = RunDirectory(tmp_path)
    run.metrics_path.write_bytes(content)
    return run


@pytest.mark.parametrize("last_round", [0, 3, 5])
def test_trim_metrics_keeps_the_complete_lines_up_to_the_round(tmp_path, last_round):
    run = run_with_metrics(tmp_path, b"".join(LINES) + b'{"round": 6, "lo')  # killed mid-line
    history = run.logged_metrics(last_round)
    assert [m["round"] for m in history] == list(range(1, last_round + 1))
    run.trim_metrics(last_round)
    assert run.metrics_path.read_bytes() == b"".join(LINES[:last_round])
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.jsonl"]


@pytest.mark.parametrize("content", [
    b"".join(LINES[:2]) + LINES[2][:-1],  # round 3 without its newline: cut short
    b"".join(LINES[:2]),  # round 3 never logged
    LINES[0] + LINES[2] + LINES[1],  # out of order
    LINES[0] + b"not json\n" + LINES[2],
])
def test_metrics_without_every_round_are_refused_before_the_file_is_touched(tmp_path, content):
    run = run_with_metrics(tmp_path, content)
    with pytest.raises(UserError, match=r"lacks the metrics of rounds 1\.\.3"):
        run.logged_metrics(3)
    assert run.metrics_path.read_bytes() == content
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.jsonl"]


def test_a_write_that_fails_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "file.txt"
    write_atomic(path, "old")
    with pytest.raises(RuntimeError):
        with atomic_path(path) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed mid-write")
    assert path.read_text() == "old" and list(tmp_path.iterdir()) == [path]
    with atomic_path(path, ".tmp.npz") as tmp:
        assert tmp.name.endswith(".tmp.npz") and tmp.parent == tmp_path
        tmp.write_text("new")
    assert path.read_text() == "new" and list(tmp_path.iterdir()) == [path]
