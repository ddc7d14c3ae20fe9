"""End-to-end: the `fedmeta` command on the bundled Omniglot, with a tiny model."""

import json
import subprocess
import sys

import pytest
from safetensors.torch import load_file

from fedmeta.cli import main

TINY = ["model.hidden=8", "server.rounds=2", "server.clients_per_round=2", "eval.every=1",
        "eval.episodes=10", "eval.final_episodes=20", "task.ways=5", "run.checkpoint_every=1"]


def demo(tmp_path, *overrides):
    args = ["demo", "--quiet", "--out", str(tmp_path / "run")]
    for item in TINY + list(overrides):
        args += ["--set", item]
    return main(args)


def test_demo_writes_a_complete_run_directory(tmp_path, capsys):
    assert demo(tmp_path) == 0
    run = tmp_path / "run"
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["round"] for m in lines] == [1, 2]
    assert all("loss" in m and "test_accuracy" in m for m in lines)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["meta_test"]["episodes"] == 20
    assert 0.0 <= summary["meta_test"]["accuracy"] <= 1.0
    assert summary["test_clients"] == 20
    assert "hidden = 8" in (run / "config.toml").read_text()
    checkpoint = load_file(str(run / "checkpoints" / "round_00002.safetensors"))
    assert any(k.startswith("params/") for k in checkpoint)
    assert not list(run.rglob("*.tmp"))
    assert "meta-test accuracy on 20 unseen clients" in capsys.readouterr().out


def test_same_seed_gives_identical_metrics(tmp_path):
    assert demo(tmp_path / "a") == 0 and demo(tmp_path / "b") == 0
    strip = lambda path: [{k: v for k, v in json.loads(line).items() if k != "seconds"}
                          for line in path.read_text().splitlines()]
    assert strip(tmp_path / "a/run/metrics.jsonl") == strip(tmp_path / "b/run/metrics.jsonl")


@pytest.mark.parametrize("override, message", [
    ("server.rounds=0", "server.rounds"),
    ("learner.bogus=1", "unknown key 'learner.bogus'"),
    ("data.path='/nonexistent/omniglot.npz'", "/nonexistent/omniglot.npz"),
])
def test_bad_input_exits_2_with_one_line(tmp_path, override, message):
    result = subprocess.run(
        [sys.executable, "-m", "fedmeta.cli", "demo", "--quiet", "--out", str(tmp_path / "r"),
         "--set", override], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and message in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "r").exists()


def test_existing_run_directory_is_left_untouched(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text("precious\n")
    assert demo(tmp_path) == 2
    assert (run / "metrics.jsonl").read_text() == "precious\n"
