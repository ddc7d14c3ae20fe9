"""Rating clients (a phone's user, MovieLens' format) on fedmeta's Flower app: their files
carry their ratings and item space, their nodes train as the simulation's clients and score
themselves as new users, and the server's run equals the simulation's (nodes in-process:
`in_process_flower`; `test_flower_deployment` starts real SuperNodes)."""

import numpy as np
import pytest
import torch

from fedmeta.build import build_datasets, build_experiment
from fedmeta.config import load_config
from fedmeta.data.client_files import clients_federated, load_client
from fedmeta.engine.rundir import RunDirectory
from fedmeta.engine.simulation import Simulation
from fedmeta.engine.training import train_and_summarize
from fedmeta.errors import UserError
from fedmeta.flower.server_app import RemoteClients
from in_process_flower import in_process_federation
from ratings_file import ITEMS, write_ratings
from test_cli import fedmeta

SMALL = ["model.embedding=8", "model.hidden=8", "task.shots=5", "task.queries=5",
         "eval.shots=5", "server.clients_per_round=4", "server.rounds=3", "eval.every=1",
         "run.checkpoint_every=0", "data.validation_fraction=0.2"]


@pytest.fixture(scope="module")
def path(tmp_path_factory):
    return write_ratings(tmp_path_factory.mktemp("ratings") / "ratings.npz", users=30)


@pytest.mark.parametrize("algorithm", ["maml", "fedavg-ft"])
def test_a_rating_federation_on_flower_runs_as_the_simulation(path, tmp_path, monkeypatch,
                                                               algorithm):
    config = load_config("configs/movielens_melu.toml", SMALL + [
        f"data.path='{path}'", f"learner.algorithm='{algorithm}'", "learner.finetune_steps=3"])
    experiment = build_experiment(config)
    simulated = train_and_summarize(Simulation(experiment), RunDirectory.create(
        config, tmp_path / "simulated"), False)
    sizes = [experiment.train.num_clients, experiment.validation.num_clients,
             experiment.test.num_clients]
    federation = in_process_federation(config, sum(sizes), monkeypatch)
    assert federation.spaces == {"num-classes": 1, "num-items": ITEMS}
    assert [len(federation.train_nodes), *map(len, federation.held_out_nodes.values())] == sizes
    deployed = train_and_summarize(federation, RunDirectory.create(config, tmp_path / "flower"),
                                   False)
    assert deployed["selected"] == simulated["selected"]
    for key, value in simulated["meta_test"].items():
        assert deployed["meta_test"][key] == pytest.approx(value, rel=1e-6), key
    assert deployed["meta_test"]["clients"] == experiment.test.num_clients


def test_nodes_of_different_item_spaces_are_one_line():
    described = [{"num-items": 40}, {"num-items": 41}]
    with pytest.raises(UserError, match=r"different item spaces \(num_items \[40, 41\]\)"):
        RemoteClients(described).num_items


def test_export_clients_writes_rating_clients_in_time_order(path, tmp_path):
    config = tmp_path / "c.toml"
    config.write_text(f"[data]\ndataset = 'movielens'\npath = '{path}'\n[model]\nname = 'melu'\n")
    result = fedmeta("export-clients", config, tmp_path / "out", "--clients", 3,
                     "--held-out", 2)
    assert result.returncode == 0, result.stderr
    train, _, test = build_datasets(load_config(config))
    files = sorted((tmp_path / "out").glob("*.npz"))  # client_*, then heldout_*
    for file, (dataset, i) in zip(files, [(train, i) for i in range(3)]
                                  + [(test, i) for i in range(2)], strict=True):
        _, client, num_classes, num_items, _ = load_client(file)
        assert (num_classes, num_items) == (1, ITEMS) and client.y.dtype == torch.float32
        assert torch.equal(client.x, dataset.client(i).x)
        assert torch.equal(client.y, dataset.client(i).y)  # the order the user rated in
    federation = clients_federated(files[:3])
    assert federation.num_items == ITEMS and federation.num_classes == 1


def rating_file(**change: np.ndarray) -> dict[str, np.ndarray]:
    """A rating client's arrays: 4 ratings of items 0, 3, 5, 7; `change` replaces some."""
    x = np.zeros((4, 3), np.float32)
    x[:, 0] = [0, 3, 5, 7]
    return {"x": x, "y": np.full(4, 3.5, np.float32), "client_id": np.int64(0),
            "num_items": np.int64(ITEMS), **change}


@pytest.mark.parametrize("arrays, message", [
    (rating_file(y=np.full(4, 3, np.int64)), "y must be 4 float"),
    ({k: v for k, v in rating_file().items() if k != "num_items"}, "y must be 4 integer"),
    (rating_file(num_items=np.int64(2)), r"column 0 is an item index in \[0, 2\)"),
    (rating_file(num_items=np.int64(0)), "num_items must be one positive integer"),
    (rating_file(y=np.array([3.0, np.nan, 1, 2], np.float32)), "NaN"),
])
def test_a_bad_rating_client_file_is_one_line(tmp_path, arrays, message):
    np.savez(tmp_path / "c.npz", **arrays)
    with pytest.raises(UserError, match=message) as error:
        load_client(tmp_path / "c.npz")
    assert "\n" not in str(error.value)
