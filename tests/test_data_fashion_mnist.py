"""Fashion-MNIST: IDX files read and checked (a corrupt one is one line), and PFLlib's
label-skew partitions: Dirichlet with its minimum size, pathological with exactly the
classes each client is given, every example once, each client's own 75/25 train/test."""

import gzip
import math
import re

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from fedmeta.data.fashion_mnist import (DEBIAN, FILES, fashion_mnist_federated,
                                        load_fashion_mnist, read_idx)
from fedmeta.data.partition import capped_dirichlet_partition, class_partition
from fedmeta.errors import UserError

installed = pytest.mark.skipif(not (DEBIAN / "t10k-labels-idx1-ubyte.gz").is_file(),
                               reason="Debian's dataset-fashion-mnist is not installed")


def idx(array: np.ndarray) -> bytes:
    return bytes([0, 0, 8, array.ndim]) + b"".join(n.to_bytes(4, "big") for n in array.shape) \
        + array.tobytes()


def test_an_idx_file_reads_back_gzipped_or_not(tmp_path):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "raw").write_bytes(idx(array))
    (tmp_path / "zipped").write_bytes(gzip.compress(idx(array)))
    assert np.array_equal(read_idx(tmp_path / "raw"), array)
    assert np.array_equal(read_idx(tmp_path / "zipped"), array)


@pytest.mark.parametrize("data, message", [
    (b"\x00\x00\x0d\x01" + (3).to_bytes(4, "big") + b"\x00" * 12, "not an IDX file of unsigned"),
    (b"\x00\x00\x08\x01" + (5).to_bytes(4, "big") + b"\x00" * 4, "4 values for a shape (5,)"),
    (b"\x1f\x8b\x08\x00broken", "cannot read"),
    (gzip.compress(b"\x00\x00\x08\x01")[:-6], "cannot read"),  # cut short
])
def test_a_corrupt_idx_file_is_one_line(tmp_path, data, message):
    (tmp_path / "bad").write_bytes(data)
    with pytest.raises(UserError, match=re.escape(message)):
        read_idx(tmp_path / "bad")


def test_files_that_are_not_fashion_mnist_are_refused(tmp_path):
    for name in FILES:
        shape = (3, 28, 28) if "images" in name else (3,)
        (tmp_path / name).write_bytes(idx(np.zeros(shape, dtype=np.uint8)))
    with pytest.raises(UserError, match="differ from Fashion-MNIST's"):
        load_fashion_mnist(tmp_path)


@installed
def test_debians_files_are_the_70000_images_of_10_classes():
    images, labels = load_fashion_mnist()
    assert images.shape == (70_000, 28, 28) and images.dtype == np.uint8
    assert np.array_equal(np.bincount(labels), np.full(10, 7_000))


@given(st.integers(2, 30), st.integers(1, 10), st.integers(0, 2 ** 16))
@settings(max_examples=60, deadline=None)
def test_a_pathological_client_holds_exactly_its_classes(clients, per_client, seed):
    labels = np.repeat(np.arange(10), 37)
    if clients * per_client < 10:
        with pytest.raises(ValueError, match="cannot hold all 10 classes"):
            class_partition(labels, clients, per_client, seed)
        return
    parts = class_partition(labels, clients, per_client, seed)
    assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(len(labels)))
    assert all(np.unique(labels[p]).size == per_client for p in parts)


def first_clients_with_room(clients: int, classes: int, per_client: int) -> list[frozenset]:
    """PFLlib's "pat" rule, restated: class c (in label order) goes to the first
    ceil(clients / classes * per_client) clients that still have room for a class."""
    room, holds = [per_client] * clients, [set() for _ in range(clients)]
    for c in range(classes):
        chosen = [i for i in range(clients) if room[i] > 0]
        for i in chosen[:math.ceil(clients / classes * per_client)]:
            holds[i].add(c)
            room[i] -= 1
    return sorted(map(frozenset, holds), key=sorted)


@given(st.integers(1, 30), st.sampled_from([1, 2, 5, 10]), st.integers(0, 2 ** 16))
@settings(max_examples=60, deadline=None)
def test_pathological_class_sets_are_pflibs_when_the_classes_divide(clients, per_client, seed):
    if clients * per_client % 10:  # PFLlib's rule then leaves classes or clients short
        return
    labels = np.repeat(np.arange(10), 37)
    parts = class_partition(labels, clients, per_client, seed)
    held = sorted((frozenset(np.unique(labels[p]).tolist()) for p in parts), key=sorted)
    assert held == first_clients_with_room(clients, 10, per_client)


def test_fashion_mnists_pathological_pairs_are_pflibs():
    labels = np.repeat(np.arange(10), 40)
    parts = class_partition(labels, 20, 2, seed=7)
    pairs = [tuple(np.unique(labels[p]).tolist()) for p in parts]
    assert sorted(pairs) == sorted([(c, c + 1) for c in range(0, 10, 2)] * 4)


def class_counts(labels: np.ndarray, parts: list[np.ndarray]) -> np.ndarray:
    """[client, class]: how many examples of each class each client holds."""
    return np.stack([np.bincount(labels[p], minlength=10) for p in parts])


@given(st.integers(1, 30), st.sampled_from([1, 2, 5, 10]), st.integers(30, 400),
       st.integers(0, 2 ** 16))
@settings(max_examples=60, deadline=None)
def test_unbalanced_amounts_follow_pflibs_rule(clients, per_client, per_class, seed):
    """PFLlib's balance = False, restated: of a class's m holders (in client order), each but
    the last takes between max(1, floor(s / 10)) and floor(s) - 1 examples, s = per_class /
    m, and the last takes the rest; the class sets are the balanced split's."""
    if clients * per_client % 10:
        return
    labels = np.repeat(np.arange(10), per_class)
    parts = class_partition(labels, clients, per_client, seed, balanced=False)
    assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(len(labels)))
    counts = class_counts(labels, parts)
    balanced = class_partition(labels, clients, per_client, seed)
    assert np.array_equal(counts > 0, class_counts(labels, balanced) > 0)
    for c in range(10):
        held = counts[:, c][counts[:, c] > 0]
        share = per_class / len(held)
        low = max(1, int(share / 10))
        assert np.all((held[:-1] >= low) & (held[:-1] < max(low + 1, int(share))))
        assert held[-1] >= share


def test_unbalanced_amounts_differ_between_clients_of_a_class():
    labels = np.repeat(np.arange(10), 7_000)
    parts = class_partition(labels, 20, 2, seed=0, balanced=False)
    sizes = sorted(len(p) for p in parts)
    assert sizes[-1] > 3 * sizes[0]  # near-equal parts would be 3,500 each
    assert sizes == sorted(len(p) for p in class_partition(labels, 20, 2, 0, balanced=False))


@given(st.integers(2, 30), st.sampled_from([0.05, 0.1, 0.5, 5.0]), st.integers(0, 2 ** 16))
@settings(max_examples=60, deadline=None)
def test_a_dirichlet_client_over_its_share_takes_no_later_class(clients, beta, seed):
    labels = np.repeat(np.arange(10), 60)
    parts = capped_dirichlet_partition(labels, clients, beta, seed)
    assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(len(labels)))
    for part in parts:
        held = np.bincount(labels[part], minlength=10)
        before = np.cumsum(held) - held  # what the client held when each class was dealt
        assert not np.any((held > 0) & (before >= len(labels) / clients))


def synthetic(n_per_class: int = 300) -> tuple[np.ndarray, np.ndarray]:
    labels = np.repeat(np.arange(10), n_per_class)
    return np.zeros((len(labels), 28, 28), dtype=np.uint8), labels


@pytest.mark.parametrize("partition, beta", [("dirichlet", 0.1), ("dirichlet", 5.0),
                                             ("pathological", 0.0)])
def test_clients_split_their_own_examples_75_25(partition, beta):
    images, labels = synthetic()
    clients = fashion_mnist_federated(images, labels, 20, partition, beta, seed=3)
    sizes, queries = [], []
    for i in range(20):
        client = clients.client(i)
        sizes.append(len(client))
        queries.append(int(client.query_mask.sum()))
        assert abs(queries[-1] - 0.25 * len(client)) <= 0.5
    assert sum(sizes) == len(labels)
    if partition == "dirichlet":
        assert min(sizes) >= 40  # PFLlib's least_samples: batch size 10 / (1 - 0.75)
    again = fashion_mnist_federated(images, labels, 20, partition, beta, seed=3)
    assert all(np.array_equal(again.client_indices(i), clients.client_indices(i))
               for i in range(20))
