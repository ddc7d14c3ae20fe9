"""A client's own data file: written by `fedmeta export-clients`, validated when loaded."""

import numpy as np
import pytest
import torch

from fedmeta.config import load_config
from fedmeta.data.client_files import clients_federated, load_client, save_client, save_role
from fedmeta.data.federated import ClientData
from fedmeta.data.shakespeare import shakespeare_roles
from fedmeta.errors import UserError
from test_cli import fedmeta
from test_data_shakespeare import arrays as shakespeare_arrays


def test_a_client_round_trips_and_files_form_a_federation_ordered_by_id(tmp_path):
    clients = [ClientData(torch.randint(0, 255, (n, 4, 4), dtype=torch.uint8),
                          torch.arange(n) % 3) for n in (5, 7)]
    save_client(tmp_path / "b.npz", clients[0], 1)
    save_client(tmp_path / "a.npz", clients[1], 0)
    client_id, loaded, num_classes, num_items, _ = load_client(tmp_path / "b.npz")
    assert client_id == 1 and torch.equal(loaded.x, clients[0].x)
    assert (num_classes, num_items) == (3, 0)
    federation = clients_federated([tmp_path / "b.npz", tmp_path / "a.npz"])
    assert federation.num_clients == 2 and len(federation.client(0)) == 7


@pytest.mark.parametrize("arrays, reason", [
    ({"x": np.zeros((2, 3), np.float32), "y": np.zeros(2, np.int64)}, "missing arrays client_id"),
    ({"x": np.full((2, 3), np.nan, np.float32), "y": np.zeros(2, np.int64),
      "client_id": 0}, "NaN"),
    ({"x": np.zeros((2, 3), np.float32), "y": np.array([0, -1]), "client_id": 0}, "negative"),
    ({"x": np.zeros((2, 3), np.float64), "y": np.zeros(2, np.int64), "client_id": 0}, "uint8"),
    ({"x": np.zeros((2, 3), np.float32), "y": np.zeros(3, np.int64), "client_id": 0}, "y must be"),
])
def test_a_bad_client_file_is_one_line_naming_the_problem(tmp_path, arrays, reason):
    np.savez(tmp_path / "c.npz", **arrays)
    with pytest.raises(UserError, match=reason):
        load_client(tmp_path / "c.npz")


def test_export_clients_writes_files_the_deployment_reads(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('[data]\ndataset = "synthetic"\nnum_clients = 6\n')
    result = fedmeta("export-clients", config, tmp_path / "out", "--clients", 4, "--held-out", 2)
    assert result.returncode == 0, result.stderr
    assert len(list((tmp_path / "out").glob("client_*.npz"))) == 4
    assert load_client(tmp_path / "out" / "heldout_00001.npz")[0] == 5
    bad = fedmeta("export-clients", config, tmp_path / "x", "--clients", 99)
    assert bad.returncode == 2 and "--clients" in bad.stderr


def test_secure_aggregation_refuses_what_needs_each_clients_update():
    with pytest.raises(UserError, match="adaptive clipping"):
        load_config(None, ["aggregation.secure=ckks", "privacy.clip_norm=1.0",
                           "privacy.adaptive_clipping=true"])


@pytest.fixture
def roles(tmp_path):
    np.savez(tmp_path / "shakespeare.npz", **shakespeare_arrays())
    return shakespeare_roles(tmp_path / "shakespeare.npz")


def test_a_role_round_trips_and_role_files_form_their_corpus(roles, tmp_path):
    """A role's file gives the node the simulation's client (its windows, targets and
    split) and LEAF's label space; role files, ordered by client id, are the roles again."""
    n = roles.num_clients
    for i in range(n):
        save_role(tmp_path / f"role{i}.npz", roles, i, n - 1 - i)
    files = [load_client(tmp_path / f"role{i}.npz") for i in range(n)]
    federation = clients_federated([tmp_path / f"role{i}.npz" for i in range(n)])
    for i, file in enumerate(files):
        assert (file.client_id, file.num_classes, file.num_items) == (n - 1 - i, 80, 0)
        for client in (file.data, federation.client(n - 1 - i)):
            expected = roles.client(i)
            assert all(torch.equal(getattr(client, key), getattr(expected, key))
                       for key in ("x", "y", "query_mask"))


@pytest.mark.parametrize("change, reason", [
    ({"text": np.frombuffer(b"a few words", np.uint8), "offsets": np.array([0, 11]),
      "split_point": np.array([5])}, "a support and a query sample"),
    ({"vocab": None}, "missing arrays vocab"),
    ({"text": None, "x": np.zeros((2, 3), np.float32)}, "missing arrays y"),
])
def test_a_bad_role_file_is_one_line(roles, tmp_path, change, reason):
    arrays = {**roles.role_arrays(0), "client_id": np.int64(0), **change}
    np.savez(tmp_path / "r.npz", **{k: v for k, v in arrays.items() if v is not None})
    with pytest.raises(UserError, match=reason) as error:
        load_client(tmp_path / "r.npz")
    assert "\n" not in str(error.value)


def test_role_and_example_files_do_not_mix(roles, tmp_path):
    save_role(tmp_path / "r.npz", roles, 0, 0)
    save_client(tmp_path / "c.npz", ClientData(torch.zeros(2, 4, 4, dtype=torch.uint8),
                                               torch.zeros(2, dtype=torch.int64)), 1)
    with pytest.raises(UserError, match="mix roles' text with examples"):
        clients_federated([tmp_path / "r.npz", tmp_path / "c.npz"])
