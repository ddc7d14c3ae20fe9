import pytest
import torch

from fedmeta.engine.callbacks import Checkpointer, EarlyStopping, TimeBudget
from fedmeta.engine.rundir import RunDirectory
from fedmeta.engine.simulation import StopTraining

PARAMS = {"w": torch.zeros(2)}


def test_early_stopping_waits_for_patience_evaluations():
    stop = EarlyStopping(patience=2)
    for r, accuracy in enumerate([0.5, 0.6, 0.55]):
        stop(r, PARAMS, {}, {"test_accuracy": accuracy})
    stop(3, PARAMS, {}, {"loss": 1.0})  # no evaluation this round: not counted
    with pytest.raises(StopTraining):
        stop(4, PARAMS, {}, {"test_accuracy": 0.6})


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
