import numpy as np
import pytest
import torch

from fedmeta.data import femnist_federated


@pytest.fixture(scope="module")
def femnist(shared_data):
    path = shared_data / "femnist.npz"
    with np.load(path, allow_pickle=False) as f:
        return path, {k: f[k] for k in ("writer", "leaf_split", "labels")}


def test_writers_are_disjoint_clients_with_leaf_query_mask(femnist):
    path, a = femnist
    train, test = femnist_federated(path, test_fraction=0.25, seed=1)
    assert (train.num_clients, test.num_clients) == (153, 51)
    assert train.num_classes == test.num_classes == 62 and train.input_shape == (1, 28, 28)
    writers = {}
    for ds in (train, test):
        for i in range(ds.num_clients):
            ix, c = ds.client_indices(i), ds.client(i)
            assert np.unique(a["writer"][ix]).size == 1
            writers.setdefault(ds.name, set()).add(int(a["writer"][ix[0]]))
            assert torch.equal(c.query_mask, torch.from_numpy(a["leaf_split"][ix] == 1))
            assert torch.equal(c.y, torch.from_numpy(a["labels"][ix].astype(np.int64)))
            assert len(c) == ds.client_size(i)
    assert not writers["femnist-train"] & writers["femnist-test"]
    assert len(writers["femnist-train"] | writers["femnist-test"]) == 204


def test_writer_split_depends_on_seed_only(femnist):
    path, _ = femnist
    a, _ = femnist_federated(path, seed=0)
    b, _ = femnist_federated(path, seed=0)
    c, _ = femnist_federated(path, seed=1)
    first = lambda ds: [ds.client_indices(i)[0] for i in range(ds.num_clients)]
    assert first(a) == first(b) != first(c)
