"""Every shipped config validates, and runs a round on data the test can reach."""

from pathlib import Path

import pytest

from fedmeta.build import build_experiment, build_vertical
from fedmeta.cli import demo_config_path
from fedmeta.config import load_config
from fedmeta.data.fashion_mnist import DEBIAN
from fedmeta.engine.simulation import Simulation

FILES_PRESENT = "t10k-labels-idx1-ubyte.gz"
CONFIGS = sorted((Path(__file__).parents[1] / "configs").glob("*.toml")) + [demo_config_path()]
SHRINK = ["server.rounds=1", "server.clients_per_round=2", "learner.local_steps=1",
          "model.hidden=8", "eval.final_episodes=5"]
VERTICAL_SHRINK = ["vertical.epochs=1", "vertical.repeats=1", "vertical.steps=2",
                   "vertical.test_episodes=2"]


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_shipped_config_runs_one_round(path, request):
    if load_config(path).federation == "vertical":
        config = load_config(path, VERTICAL_SHRINK)
        if config.vertical.data == "femnist-strips" and config.vertical.path is None:
            config.vertical.path = str(request.getfixturevalue("shared_data") / "femnist.npz")
        summary, _ = build_vertical(config)()
        assert 0 <= summary["results"]["vertical"]["accuracy"]["mean"] <= 1
        return
    config = load_config(path, SHRINK)
    if config.data.dataset == "fashion-mnist" and not (DEBIAN / FILES_PRESENT).is_file():
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
    if config.data.path is None and config.data.dataset not in ("synthetic", "fashion-mnist"):
        shared_data = request.getfixturevalue("shared_data")
        config.data.path = str(shared_data / f"{config.data.dataset}.npz")
    params = Simulation(build_experiment(config)).run()
    assert all(v.isfinite().all() for v in params.values())
