import importlib.util
import sys

import pytest
import torch

from fedmeta.cli import main
from fedmeta.config import load_config
from fedmeta.engine.callbacks import (BestRound, Checkpointer, EarlyStopping, TensorBoardLogger,
                                      TimeBudget)
from fedmeta.engine.rundir import RunDirectory
from fedmeta.engine.simulation import StopTraining
from fedmeta.errors import UserError

PARAMS = {"w": torch.zeros(2)}
needs_tensorboard = pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None,
                                       reason="no tensorboard package (pip install tensorboard)")


def test_early_stopping_waits_for_patience_evaluations():
    stop = EarlyStopping(patience=2)
    for r, accuracy in enumerate([0.5, 0.6, 0.55]):
        stop(r, PARAMS, {}, {"val_accuracy": accuracy})
    stop(3, PARAMS, {}, {"loss": 1.0})  # no evaluation this round: not counted
    with pytest.raises(StopTraining):
        stop(4, PARAMS, {}, {"val_accuracy": 0.6})


def test_early_stopping_and_selection_never_read_the_meta_test_clients():
    stop, selection = EarlyStopping(patience=1), BestRound()
    for r, test_accuracy in enumerate([0.5, 0.9, 0.95, 0.99], start=1):
        metrics = {"test_accuracy": test_accuracy, "val_accuracy": 0.5}
        selection(r, {"w": torch.full((2,), float(r))}, {}, metrics)
        if r > 1:
            with pytest.raises(StopTraining):
                stop(r, PARAMS, {}, metrics)
        else:
            stop(r, PARAMS, {}, metrics)
    assert selection.round == 1 and selection.params["w"][0] == 1  # the first of equals


def test_selection_keeps_the_best_validation_round_and_its_metrics():
    selection = BestRound()
    for r, accuracy in enumerate([0.4, 0.7, None, 0.6], start=1):
        metrics = {"loss": 1.0} if accuracy is None else {"val_accuracy": accuracy,
                                                          "val_ci95": 0.1, "loss": 1.0}
        selection(r, {"w": torch.full((2,), float(r))}, {}, metrics)
    assert (selection.round, selection.best) == (2, 0.7)
    assert torch.equal(selection.params["w"], torch.full((2,), 2.0))
    assert selection.metrics == {"val_accuracy": 0.7, "val_ci95": 0.1}


def test_time_budget():
    TimeBudget(60)(1, PARAMS, {}, {})
    with pytest.raises(StopTraining):
        TimeBudget(0)(1, PARAMS, {}, {})


def test_checkpointer_saves_every_k_and_the_last_round(tmp_path):
    run = RunDirectory(tmp_path)
    run.checkpoints.mkdir()
    checkpointer = Checkpointer(run, every=2)
    for r in range(1, 6):
        checkpointer(r, PARAMS, {}, {})
    checkpointer.finish()
    assert [p.name for p in sorted(run.checkpoints.iterdir())] == [
        "round_00002.safetensors", "round_00004.safetensors", "round_00005.safetensors"]


def tensorboard_scalars(directory) -> dict[str, list[tuple[int, float]]]:
    """Every scalar TensorBoard shows from `directory`: tag -> (step, value)s."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(directory)).Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)]
            for tag in events.Tags()["scalars"]}


@needs_tensorboard
def test_tensorboard_logs_numbers_and_a_resumed_run_replaces_its_later_rounds(tmp_path):
    with TensorBoardLogger(tmp_path) as logger:
        for r in (1, 2, 3):
            logger(r, PARAMS, {}, {"round": r, "loss": float(r), "aborted": "why",
                                   "excluded": {"4": "dropped"}, "flag": True})
    with TensorBoardLogger(tmp_path, start_round=3) as logger:  # resumed after round 2
        logger(3, PARAMS, {}, {"round": 3, "loss": 30.0})
    assert tensorboard_scalars(tmp_path) == {"loss": [(1, 1.0), (2, 2.0), (3, 30.0)]}


@needs_tensorboard
def test_run_tensorboard_writes_each_round_s_metrics(tmp_path):
    overrides = ["model.hidden=8", "server.rounds=2", "server.clients_per_round=2",
                 "eval.every=2", "eval.episodes=10", "eval.final_episodes=10",
                 "learner.local_steps=1", "run.tensorboard=true"]
    assert main(["demo", "--quiet", "--out", str(tmp_path),
                 *[arg for item in overrides for arg in ("--set", item)]]) == 0
    scalars = tensorboard_scalars(tmp_path / "tensorboard")
    assert [step for step, _ in scalars["loss"]] == [1, 2]
    assert [step for step, _ in scalars["val_accuracy"]] == [2]


def test_run_tensorboard_without_tensorboard_is_a_config_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # as if not installed
    with pytest.raises(UserError, match="run.tensorboard needs the tensorboard package: "
                                        "pip install tensorboard"):
        load_config(None, ["run.tensorboard=true"])
