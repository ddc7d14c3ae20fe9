import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from fedmeta.data import ClientData, EpisodeSampler, NotEnoughData, episodes_from_arrays

fast = settings(max_examples=30, deadline=None)


def make_client(counts):
    """Client whose example i is a 2x2 uint8 image holding i, so x identifies the example."""
    y = torch.repeat_interleave(torch.arange(len(counts)) * 7 + 3, torch.tensor(counts))
    y = y[torch.randperm(len(y), generator=torch.Generator().manual_seed(0))]
    ids = torch.arange(len(y))
    x = torch.stack([ids % 256, ids // 256], -1).to(torch.uint8).view(-1, 2, 1).expand(-1, 2, 2).contiguous()
    return ClientData(x, y)


def example_ids(x):
    """Recover example ids from float images [..., 1, 2, 2]."""
    v = torch.round(x[..., 0, :, 0] * 255).long()
    return v[..., 0] + 256 * v[..., 1]


@fast
@given(
    st.lists(st.integers(0, 30), min_size=1, max_size=12),
    st.integers(1, 5), st.integers(1, 4), st.integers(0, 4), st.integers(1, 6), st.integers(0, 2**31),
)
def test_sampler_properties(counts, ways, shots, queries, num_episodes, seed):
    client, sampler = make_client(counts), EpisodeSampler(ways, shots, queries)
    eligible = sum(c >= shots + queries for c in counts) >= ways
    assert sampler.eligible(client) == eligible
    if not eligible:
        with pytest.raises(NotEnoughData, match=f"needs {ways}"):
            sampler.sample(client, num_episodes, torch.Generator().manual_seed(seed))
        return
    ep = sampler.sample(client, num_episodes, torch.Generator().manual_seed(seed))
    e, n, k, q = num_episodes, ways, shots, queries
    assert ep.support_x.shape == (e, n * k, 1, 2, 2) and ep.query_x.shape == (e, n * q, 1, 2, 2)
    assert ep.support_x.dtype == torch.float32 and ep.support_y.dtype == torch.int64
    assert (ep.ways, ep.shots, ep.num_episodes) == (n, k, e)
    assert torch.equal(torch.bincount(ep.support_y.flatten(), minlength=n), torch.full((n,), e * k))
    assert torch.equal(torch.bincount(ep.query_y.flatten(), minlength=n)[:n], torch.full((n,), e * q))
    s_ids, q_ids = example_ids(ep.support_x), example_ids(ep.query_x)
    for i in range(e):
        ids = torch.cat([s_ids[i], q_ids[i]])
        assert ids.unique().numel() == ids.numel()  # support and query disjoint, no repeats
        orig = torch.cat([client.y[s_ids[i]], client.y[q_ids[i]]])
        new = torch.cat([ep.support_y[i], ep.query_y[i]])
        for c in range(n):
            assert orig[new == c].unique().numel() == 1  # one original class per episode label
        assert orig.unique().numel() == n
    again = sampler.sample(client, num_episodes, torch.Generator().manual_seed(seed))
    assert torch.equal(again.support_x, ep.support_x) and torch.equal(again.query_x, ep.query_x)


def test_sampler_covers_classes_and_examples():
    client = make_client([6] * 8)
    ep = EpisodeSampler(3, 2, 1).sample(client, 400, torch.Generator().manual_seed(1))
    seen = torch.cat([example_ids(ep.support_x).flatten(), example_ids(ep.query_x).flatten()])
    assert seen.unique().numel() == len(client)


def test_not_enough_data_message():
    with pytest.raises(NotEnoughData) as e:
        EpisodeSampler(5, 1, 15).sample(make_client([16, 16, 3]), 1, torch.Generator())
    assert str(e.value).startswith("client has 2 classes with >= 16 examples, needs 5")


def test_episode_indexing_keeps_leading_dim():
    ep = EpisodeSampler(2, 1, 1).sample(make_client([3, 3]), 4, torch.Generator().manual_seed(0))
    one = ep[2]
    assert one.num_episodes == 1 and torch.equal(one.support_x[0], ep.support_x[2])
    assert ep[1:3].num_episodes == 2 and ep[-1].num_episodes == 1
    with pytest.raises(IndexError):
        ep[4]


def test_float_features_client():
    client = ClientData(torch.randn(40, 6), torch.arange(40) % 4)
    ep = EpisodeSampler(4, 2, 3).sample(client, 5, torch.Generator().manual_seed(0))
    assert ep.support_x.shape == (5, 8, 6) and ep.query_x.shape == (5, 12, 6)


def valid_arrays(e=3, n=4, k=2, q=3):
    rng = np.random.default_rng(0)
    sy = np.tile(np.repeat(np.arange(n), k), (e, 1))
    qy = np.tile(np.repeat(np.arange(n), q), (e, 1))
    return (rng.integers(0, 256, (e, n * k, 5, 5), dtype=np.uint8), sy,
            rng.integers(0, 256, (e, n * q, 5, 5), dtype=np.uint8), qy)


def test_episodes_from_arrays_valid():
    sx, sy, qx, qy = valid_arrays()
    ep = episodes_from_arrays(sx, sy, qx, qy)
    assert ep.support_x.shape == (3, 8, 1, 5, 5) and ep.ways == 4 and ep.shots == 2
    assert torch.allclose(ep.support_x[..., 0, :, :] * 255, torch.from_numpy(sx).float())
    feats = episodes_from_arrays(np.zeros((2, 4, 7)), sy[:2, :4] // 2, np.zeros((2, 1, 7)), np.zeros((2, 1), int))
    assert feats.support_x.dtype == torch.float32 and feats.query_x.shape == (2, 1, 7)


def _bad(i, value):
    arrays = list(valid_arrays())
    arrays[i] = value(arrays[i])
    return arrays


@pytest.mark.parametrize(
    "arrays, match",
    [
        (_bad(0, lambda x: x.astype(np.int32)), "uint8"),
        (_bad(0, lambda x: x[:, :, 0]), "support_x must be"),
        (_bad(0, lambda x: np.where(x > 100, np.nan, x / 255.0)), "NaN"),
        (_bad(1, lambda y: y[:, :-1]), "support_y must be integer"),
        (_bad(1, lambda y: y.astype(float)), "support_y must be integer"),
        (_bad(1, lambda y: np.where(y == 3, 5, y)), "equally often"),
        (_bad(1, lambda y: y - 1), "non-negative"),
        (_bad(3, lambda y: y + 1), "query labels"),
        (_bad(2, lambda x: x[:2]), "query_y must be integer|episode count"),
        (_bad(2, lambda x: x[:, :, :4]), "item shapes"),
    ],
)
def test_episodes_from_arrays_errors(arrays, match):
    with pytest.raises(ValueError, match=match) as e:
        episodes_from_arrays(*arrays)
    assert "\n" not in str(e.value)
