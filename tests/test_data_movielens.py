"""MovieLens as users-as-clients (`fedmeta.data.movielens`) and cold-start episodes
(`fedmeta.data.cold_start`), on synthetic rating files; the real file where it is present."""

import numpy as np
import pytest
import torch

from fedmeta.data import ColdStartSampler, TooFewRatings, hold_out_validation, movielens_federated
from fedmeta.data.movielens import YEAR_ORIGIN, YEAR_SCALE
from fedmeta.errors import UserError
from ratings_file import GENRES, ITEMS, write_ratings


@pytest.fixture(scope="module")
def ratings(tmp_path_factory):
    path = write_ratings(tmp_path_factory.mktemp("movielens") / "ratings.npz")
    with np.load(path) as f:
        return path, dict(f)


def test_each_user_a_client_its_ratings_in_time_order(ratings):
    path, a = ratings
    train, test = movielens_federated(path, test_fraction=0.25, seed=1)
    assert (train.num_clients, test.num_clients) == (18, 6)
    assert train.input_shape == (2 + GENRES,) and train.num_classes == 1
    assert train.num_items == test.num_items == ITEMS
    users = {}
    for ds in (train, test):
        for i in range(ds.num_clients):
            rows, client = ds.client_indices(i), ds.client(i)
            assert np.unique(a["user"][rows]).size == 1
            assert (np.diff(a["timestamp"][rows]) >= 0).all()
            assert torch.equal(client.y, torch.from_numpy(a["rating"][rows]))
            items = a["item"][rows]
            assert torch.equal(client.x[:, 0], torch.from_numpy(items.astype(np.float32)))
            genres = torch.from_numpy(a["genres"][items].astype(np.float32))
            assert torch.equal(client.x[:, 2:], genres)
            year = a["year"][items]
            expected = np.where(year > 0, (year - YEAR_ORIGIN) / YEAR_SCALE, 0).astype(np.float32)
            assert torch.allclose(client.x[:, 1], torch.from_numpy(expected))
            users.setdefault(ds.name, set()).add(int(a["user"][rows[0]]))
    assert not users["movielens-train"] & users["movielens-test"]
    assert len(users["movielens-train"] | users["movielens-test"]) == 24


def test_validation_users_are_disjoint_and_keep_the_item_space(ratings):
    train, test = movielens_federated(ratings[0], seed=0)
    rest, validation = hold_out_validation(train, 0.2, seed=0)
    assert validation.num_items == rest.num_items == ITEMS
    first = lambda ds: {int(ds.client_indices(i)[0]) for i in range(ds.num_clients)}  # noqa: E731
    assert not first(rest) & first(validation) and not first(validation) & first(test)


def test_user_split_depends_on_the_seed_only(ratings):
    first = lambda ds: [int(ds.client_indices(i)[0]) for i in range(ds.num_clients)]  # noqa: E731
    a, b, c = (movielens_federated(ratings[0], seed=s)[1] for s in (0, 0, 1))
    assert first(a) == first(b) != first(c)


def test_support_is_the_first_ratings_query_later_ones(ratings):
    train, _ = movielens_federated(ratings[0])
    client = train.client(0)
    sampler = ColdStartSampler(shots=5, queries=4)
    support, query = sampler.split(client)
    assert torch.equal(support.x, client.x[:5]) and torch.equal(query.y, client.y[5:])
    episodes = sampler.sample(client, 3, torch.Generator().manual_seed(0))
    assert episodes.support_x.shape == (3, 5, 2 + GENRES) and episodes.query_y.shape == (3, 4)
    assert (episodes.support_x == client.x[:5]).all()
    later = {tuple(row.tolist()) for row in client.x[5:]}
    for e in range(3):  # drawn from the later ratings, without replacement
        rows = [tuple(row.tolist()) for row in episodes.query_x[e]]
        assert set(rows) <= later and len(set(rows)) == 4


def test_a_user_with_few_later_ratings_repeats_them_and_none_is_refused(ratings):
    train, _ = movielens_federated(ratings[0])
    client = train.client(0)
    sampler = ColdStartSampler(shots=len(client) - 2, queries=5)
    episodes = sampler.sample(client, 2, torch.Generator().manual_seed(0))
    assert episodes.query_y.shape == (2, 5)
    with pytest.raises(TooFewRatings, match="needs more than"):
        ColdStartSampler(len(client), 5).sample(client, 1, torch.Generator())


@pytest.mark.parametrize("arrays, message", [
    ({"rating": np.full(3, 7.0, np.float32)}, "rating must be"),
    ({"item": np.full(3, ITEMS, np.int32)}, r"item must lie in \[0, 40\)"),
    ({"genres": np.full((ITEMS, GENRES), 2, np.uint8)}, "genres must be a 0/1 matrix"),
    ({"year": np.zeros(3, np.int16)}, "year must be 40 integer"),
    ({"user": np.zeros(3, np.float32)}, "user must be"),
    ({"timestamp": np.zeros(2, np.int64)}, "timestamp must be"),
])
def test_a_bad_file_fails_with_one_line_naming_it(tmp_path, arrays, message):
    base = {"user": np.array([0, 0, 1], np.int32), "item": np.array([0, 1, 2], np.int32),
            "rating": np.array([1.0, 2.5, 5.0], np.float32), "timestamp": np.arange(3),
            "genres": np.eye(ITEMS, GENRES, dtype=np.uint8),
            "year": np.full(ITEMS, 1999, np.int16)}
    path = tmp_path / "bad.npz"
    np.savez(path, **{**base, **arrays})
    with pytest.raises(UserError, match=f"^data error: {path}: {message}") as error:
        movielens_federated(path)
    assert "\n" not in str(error.value)


def test_a_missing_array_or_an_unsplittable_file_is_one_line(tmp_path, ratings):
    path = tmp_path / "partial.npz"
    np.savez(path, **{k: v for k, v in ratings[1].items() if k != "genres"})
    with pytest.raises(UserError, match="missing arrays genres"):
        movielens_federated(path)
    with pytest.raises(UserError, match="cannot be split"):
        movielens_federated(ratings[0], test_fraction=0.01)


def test_real_file_users_in_time_order(shared_data):
    path = shared_data / "movielens.npz"
    if not path.is_file():
        pytest.skip("movielens.npz not present")
    train, test = movielens_federated(path, test_fraction=0.2, seed=0)
    assert (train.num_clients, test.num_clients) == (440, 110) and train.num_items == 9742
    assert sum(ds.client_size(i) for ds in (train, test) for i in range(ds.num_clients)) == 92621
    with np.load(path) as f:
        timestamp = f["timestamp"]
    for i in range(0, train.num_clients, 37):
        assert (np.diff(timestamp[train.client_indices(i)]) >= 0).all()
