from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings, strategies as st

import fedmeta
from fedmeta.data import ArrayFederatedDataset, ClientData, as_float_input, split_support_query
from fedmeta.data.federated import pool


def test_imports_from_this_checkout():
    assert Path(__file__).resolve().parents[1] / "src" in Path(fedmeta.__file__).resolve().parents


def small_dataset(**kw):
    x = np.arange(10 * 3 * 3, dtype=np.uint8).reshape(10, 3, 3)
    y = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 5])
    return ArrayFederatedDataset("toy", x, y, [np.array([0, 3, 6]), np.array([1, 9])], **kw)


def test_array_dataset_gathers_only_its_client():
    ds = small_dataset(query_mask=np.arange(10) % 2 == 1)
    assert (ds.num_clients, len(ds), ds.input_shape, ds.num_classes) == (2, 2, (1, 3, 3), 3)
    c = ds.client(1)
    assert isinstance(c, ClientData) and len(c) == 2 == ds.client_size(1)
    assert c.y.tolist() == [1, 5] and c.y.dtype == torch.int64 and c.query_mask.tolist() == [True, True]
    assert torch.equal(c.x[1], torch.arange(81, 90, dtype=torch.uint8).view(3, 3))
    assert c.classes.tolist() == [1, 5]
    with pytest.raises(IndexError):
        ds.client(2)


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(client_indices=[np.array([0, 10])]), "out of range"),
        (dict(y=-np.ones(10, int)), "non-negative"),
        (dict(x=np.full((10, 4), np.nan, np.float32)), "NaN"),
        (dict(y=np.zeros(9, int)), "same length"),
        (dict(x=np.zeros((10, 4), np.int32)), "uint8"),
    ],
)
def test_array_dataset_validation(kw, match):
    args = dict(name="bad", x=np.zeros((10, 4), np.float32), y=np.zeros(10, int), client_indices=[np.arange(10)])
    with pytest.raises(ValueError, match=match) as e:
        ArrayFederatedDataset(**{**args, **kw})
    assert "\n" not in str(e.value)


def test_as_float_input():
    x = torch.tensor([[[0, 255], [51, 102]]], dtype=torch.uint8)
    f = as_float_input(x)
    assert f.shape == (1, 1, 2, 2) and f.dtype == torch.float32 and f.max() == 1.0
    feats = torch.randn(3, 5)
    assert as_float_input(feats) is feats
    assert as_float_input(feats.double()).dtype == torch.float32


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(1, 20), min_size=1, max_size=8), st.floats(0.05, 0.95), st.integers(0, 1000))
@example([10], 0.05000000000000001, 0)  # 10 x fraction just above 0.5: float32 rounded it to 0
def test_stratified_split(counts, fraction, seed):
    y = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))
    client = ClientData(torch.arange(len(y)).float().unsqueeze(1), y)
    sup, qry = split_support_query(client, fraction, seed)
    assert len(sup) + len(qry) == len(client)
    ids = torch.cat([sup.x, qry.x]).flatten()
    assert ids.unique().numel() == len(client)
    assert torch.equal(sup.classes, client.classes)  # every class keeps a support example
    for c, n in enumerate(counts):
        assert (qry.y == c).sum() == min(round(n * fraction), n - 1)
    again = split_support_query(client, fraction, seed)
    assert torch.equal(again[1].x, qry.x)


def test_split_uses_query_mask():
    mask = torch.tensor([True, False, False, True])
    client = ClientData(torch.arange(4).float().unsqueeze(1), torch.zeros(4, dtype=torch.long), mask)
    sup, qry = split_support_query(client, 0.5, 0)
    assert sup.x.flatten().tolist() == [1, 2] and qry.x.flatten().tolist() == [0, 3]


@given(st.lists(st.lists(st.integers(0, 4), min_size=1, max_size=8), min_size=1, max_size=5))
def test_pooled_clients_keep_their_examples_and_their_classes_apart(labels):
    """Pooling clients keeps every example with its label, each client's classes distinct
    from every other client's (class c of client i and class c of client j are two)."""
    sizes = np.cumsum([0] + [len(y) for y in labels])
    x = np.arange(sizes[-1] * 4, dtype=np.float32).reshape(-1, 4)
    dataset = ArrayFederatedDataset("toy", x, np.concatenate(labels),
                                    [np.arange(a, b) for a, b in zip(sizes[:-1], sizes[1:])])
    client = pool([dataset.client(i) for i in range(dataset.num_clients)])
    assert torch.equal(client.x, torch.from_numpy(x))
    owner = np.repeat(np.arange(len(labels)), [len(y) for y in labels])
    pairs = set(zip(owner.tolist(), np.concatenate(labels).tolist()))
    assert len(set(client.y.tolist())) == len(pairs)  # one class per (client, label)
    assert len(set(zip(owner.tolist(), client.y.tolist()))) == len(pairs)
