import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from fedmeta.data import dirichlet_partition, key_partition, random_partition, shard_partition

labels_st = st.lists(st.integers(0, 9), min_size=1, max_size=300).map(np.array)
fast = settings(max_examples=40, deadline=None)


def assert_exact_cover(parts, n, num_clients):
    assert len(parts) == num_clients
    assert all(p.dtype == np.int64 for p in parts)
    assert sum(len(p) for p in parts) == n
    np.testing.assert_array_equal(np.sort(np.concatenate(parts)), np.arange(n))


def assert_same(a, b):
    assert len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


@fast
@given(labels_st, st.integers(1, 12), st.floats(0.05, 10.0), st.integers(0, 2**31))
def test_dirichlet_cover_and_determinism(labels, k, alpha, seed):
    parts = dirichlet_partition(labels, k, alpha, seed)
    assert_exact_cover(parts, len(labels), k)
    assert_same(parts, dirichlet_partition(labels, k, alpha, seed))


@fast
@given(st.integers(1, 8), st.integers(0, 1000))
def test_dirichlet_min_size(k, seed):
    labels = np.arange(200) % 5
    parts = dirichlet_partition(labels, k, 0.5, seed, min_size=10)
    assert min(len(p) for p in parts) >= 10


def test_dirichlet_label_skew_grows_as_alpha_shrinks():
    labels = np.arange(5000) % 10

    def mean_classes(alpha):
        return np.mean([np.unique(labels[p]).size for p in dirichlet_partition(labels, 20, alpha, 0) if len(p)])

    assert mean_classes(0.05) < 4 < 9.5 < mean_classes(100.0)


@fast
@given(labels_st, st.integers(1, 10), st.integers(1, 3), st.integers(0, 2**31))
def test_shard_cover_and_determinism(labels, k, s, seed):
    if k * s > len(labels):
        with pytest.raises(ValueError, match="shards"):
            shard_partition(labels, k, s, seed)
        return
    parts = shard_partition(labels, k, s, seed)
    assert_exact_cover(parts, len(labels), k)
    assert_same(parts, shard_partition(labels, k, s, seed))
    assert max(map(len, parts)) - min(map(len, parts)) <= s


def test_shard_is_label_skewed():
    labels = np.repeat(np.arange(10), 100)
    parts = shard_partition(labels, 50, 2, seed=1)
    assert all(np.unique(labels[p]).size <= 2 for p in parts)


@fast
@given(st.lists(st.sampled_from(["b", "a", "c", "zz"]), min_size=1, max_size=100).map(np.array))
def test_key_partition_one_client_per_key(keys):
    parts = key_partition(keys)
    assert_exact_cover(parts, len(keys), np.unique(keys).size)
    assert [keys[p[0]] for p in parts] == sorted(set(keys.tolist()))
    assert all((keys[p] == keys[p[0]]).all() for p in parts)


@fast
@given(st.integers(1, 500), st.integers(1, 20), st.integers(0, 2**31))
def test_random_cover_and_determinism(n, k, seed):
    if k > n:
        with pytest.raises(ValueError):
            random_partition(n, k, seed)
        return
    parts = random_partition(n, k, seed)
    assert_exact_cover(parts, n, k)
    assert_same(parts, random_partition(n, k, seed))
    assert max(map(len, parts)) - min(map(len, parts)) <= 1


def test_seeds_differ():
    assert not np.array_equal(random_partition(100, 2, 0)[0], random_partition(100, 2, 1)[0])


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: dirichlet_partition(np.zeros(5, int), 0, 1.0, 0), "num_clients"),
        (lambda: dirichlet_partition(np.zeros(5, int), 2, 0.0, 0), "alpha"),
        (lambda: dirichlet_partition(np.zeros(5, int), 2, 1.0, 0, min_size=3), "min_size"),
        (lambda: shard_partition(np.zeros(5, int), 3, 2, 0), "shards"),
        (lambda: shard_partition(np.zeros(5, int), 1, 0, 0), "shards_per_client"),
        (lambda: random_partition(5, 0, 0), "num_clients"),
    ],
)
def test_bad_arguments_raise_one_line(call, match):
    with pytest.raises(ValueError, match=match) as e:
        call()
    assert "\n" not in str(e.value)
