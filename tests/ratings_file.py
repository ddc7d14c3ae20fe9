"""Small synthetic rating files in the MovieLens npz format (`fedmeta.data.movielens`): random
users, movies and ratings, never MovieLens data."""

from pathlib import Path

import numpy as np

ITEMS, GENRES = 40, 4


def write_ratings(path: Path, users: int = 24, seed: int = 0, **replace: np.ndarray) -> Path:
    """A file of `users` users with 12 to 30 ratings each (half stars from a user bias plus an
    item bias plus noise), rows shuffled; `replace` overrides arrays by name."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(12, 31, users)
    user = np.repeat(np.arange(users), counts).astype(np.int32)
    item = np.concatenate([rng.choice(ITEMS, n, replace=False) for n in counts]).astype(np.int32)
    value = 3.5 + rng.normal(0, 0.5, users)[user] + rng.normal(0, 0.7, ITEMS)[item]
    rating = np.clip(np.round(2 * (value + rng.normal(0, 0.3, len(user)))) / 2, 0.5, 5.0)
    timestamp = rng.integers(10**9, 2 * 10**9, len(user))
    genres = (rng.random((ITEMS, GENRES)) < 0.4).astype(np.uint8)
    genres[np.arange(ITEMS), rng.integers(0, GENRES, ITEMS)] = 1
    year = rng.integers(1950, 2019, ITEMS).astype(np.int16)
    year[0] = 0  # a movie of unknown year
    order = rng.permutation(len(user))
    arrays = dict(user=user[order], item=item[order], rating=rating[order].astype(np.float32),
                  timestamp=timestamp[order], genres=genres, year=year)
    np.savez_compressed(path, **{**arrays, **replace})
    return path
