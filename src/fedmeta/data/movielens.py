"""MovieLens (Harper & Konstan 2015, "The MovieLens Datasets: History and Context") as a
federation of phones: each user a client holding its own ratings, in the order it gave them,
for cold-start recommendation as MeLU (Lee et al., KDD 2019) meta-learns it.

Users are split disjointly into meta-train and meta-test clients (`test_fraction`, by seed);
`fedmeta.build` holds meta-validation users out of the training side. A client's examples are
its ratings sorted by (timestamp, movie): its features those of the movie it rated
(`item_features`), its targets the ratings in stars (float32, 0.5 to 5).

The file is GroupLens' ml-latest-small as `shared/data/PROVENANCE_movielens.md` describes it
(research use only): arrays `user`, `item`, `rating`, `timestamp` one per rating, `genres`
(multi-hot [M, G]) and `year` ([M], 0 unknown) one per movie.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from fedmeta.data.federated import ArrayFederatedDataset
from fedmeta.data.npz import check_column, check_range, data_error, described, load_npz
from fedmeta.data.sources import resolve_dataset
from fedmeta.data.validation import hold_out_test

MIN_RATING, MAX_RATING = 0.5, 5.0
YEAR_ORIGIN, YEAR_SCALE = 2000.0, 20.0  # years as (year - 2000) / 20; unknown (0) as 2000


def item_features(items: np.ndarray, years: np.ndarray, genres: np.ndarray) -> np.ndarray:
    """float32 [n, 2 + G] for `n` rated movies: column 0 the movie's index (exact in float32
    below 2^24), column 1 its scaled year, then its genre multi-hot `genres` [n, G]."""
    scaled = np.where(years > 0, (years - YEAR_ORIGIN) / YEAR_SCALE, 0.0)
    return np.column_stack([items, scaled, genres]).astype(np.float32)


def load_ratings(path: str | Path) -> tuple[np.ndarray, np.ndarray, list[np.ndarray], int]:
    """(features [R, 2 + G] float32, ratings [R] float32, each user's rows in time order, the
    number of movies M) of a ratings file, checked array by array (one-line UserError)."""
    a = load_npz(path, ("user", "item", "rating", "timestamp", "genres", "year"))
    user, item, rating, timestamp = a["user"], a["item"], a["rating"], a["timestamp"]
    genres, year = a["genres"], a["year"]
    if not len(rating):
        raise data_error(path, "holds no ratings")
    check_column(path, "user", user, len(rating), "iu")
    check_range(path, "user", user, 0, 2**31)
    check_column(path, "item", item, len(rating), "iu")
    check_column(path, "timestamp", timestamp, len(rating), "iu")
    if rating.shape != (len(rating),) or rating.dtype.kind != "f" or not (
            np.isfinite(rating).all() and MIN_RATING <= rating.min() <= rating.max() <= MAX_RATING):
        raise data_error(path, f"rating must be {len(rating)} floats in [{MIN_RATING}, "
                               f"{MAX_RATING}], got {described(rating)}")
    if genres.ndim != 2 or genres.dtype.kind not in "biu" or not len(genres) or (
            genres.size and genres.max() > 1) or (genres.size and genres.min() < 0):
        raise data_error(path, f"genres must be a 0/1 matrix [M, G] with M > 0 movies, got "
                               f"{described(genres)}")
    check_column(path, "year", year, len(genres), "iu")
    check_range(path, "year", year, 0, 10000)
    check_range(path, "item", item, 0, len(genres))
    order = np.lexsort((item, timestamp, user))
    starts = np.flatnonzero(np.diff(user[order], prepend=-1))
    clients = np.split(order.astype(np.int64), starts[1:])
    return (item_features(item, year[item], genres[item]), rating.astype(np.float32), clients,
            len(genres))


def movielens_users(path: str | Path | None = None, download: bool = False
                    ) -> ArrayFederatedDataset:
    """Every user of a ratings file as a client, in the file's item space."""
    x, ratings, clients, items = load_ratings(resolve_dataset("movielens", path, download))
    return ArrayFederatedDataset("movielens", x, ratings, clients, num_items=items)


def movielens_federated(path: str | Path | None = None, test_fraction: float = 0.2,
                        seed: int = 0, download: bool = False
                        ) -> tuple[ArrayFederatedDataset, ArrayFederatedDataset]:
    """(train users, test users): the users split at random by `seed`, `test_fraction` of
    them (rounded) new users for meta-test."""
    path = resolve_dataset("movielens", path, download)
    return hold_out_test(movielens_users(path), test_fraction, seed, path, "users")
