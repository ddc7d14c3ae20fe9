"""New clients from a file in the run's dataset format (`fedmeta eval --clients`,
`fedmeta.build.build_new_clients`) for rating and text runs; Omniglot's end to end is in
test_cli."""

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from fedmeta.build import build_datasets, build_experiment, build_new_clients
from fedmeta.config import load_config, validate
from fedmeta.engine.simulation import Simulation
from fedmeta.errors import UserError
from ratings_file import GENRES, ITEMS, write_ratings
from test_data_shakespeare import arrays, text_config

CONFIGS = Path(__file__).parent.parent / "configs"


@pytest.fixture(scope="module")
def ratings(tmp_path_factory):
    return write_ratings(tmp_path_factory.mktemp("ratings") / "ratings.npz")


def test_a_user_brought_in_a_file_scores_as_the_same_user_held_out(ratings):
    """Each user is scored once, deterministically: the meta-test users' MAEs are among those
    of every user of the same file brought as new clients, the rest being the training and
    meta-validation users."""
    config = load_config(CONFIGS / "movielens_melu.toml", [
        f"data.path='{ratings}'", "eval.shots=5", "task.shots=5", "model.embedding=4",
        "model.hidden=6"])
    experiment = build_experiment(config)
    params = experiment.learner.init_params()
    held_out = Simulation(experiment).evaluate(params, 1, per_client=True)
    new = build_new_clients(config, ratings, experiment.train)
    brought = Simulation(replace(experiment, test=new)).evaluate(params, 1, per_client=True)
    assert brought["test_held_out_clients"] == new.num_clients == 24
    every = sorted(brought["test_per_client_mae"])
    assert set(held_out["test_per_client_mae"]) <= set(every)
    assert len(every) == 24 and held_out["test_held_out_clients"] < 24


def test_new_users_rate_in_the_run_s_item_space(ratings, tmp_path):
    config = load_config(CONFIGS / "movielens_melu.toml", [f"data.path='{ratings}'"])
    train = build_datasets(config).train
    more_movies = write_ratings(tmp_path / "more.npz",
                                genres=np.ones((ITEMS + 5, GENRES), np.uint8),
                                year=np.full(ITEMS + 5, 1990, np.int16))
    message = f"rate {ITEMS + 5} movies, the run's model knows {ITEMS}"
    with pytest.raises(UserError, match=message):
        build_new_clients(config, more_movies, train)


def test_new_roles_are_every_role_of_the_file(tmp_path):
    path = tmp_path / "plays.npz"
    np.savez(path, **arrays())
    config = validate(text_config(path, "maml"))
    datasets = build_datasets(config)
    new = build_new_clients(config, path, datasets.train)
    assert new.num_clients == sum(side.num_clients for side in datasets)
    sizes = lambda d: sorted(d.client_size(i) for i in range(d.num_clients))
    assert sizes(new) == sorted(sum((sizes(side) for side in datasets), []))


def test_a_file_of_another_dataset_is_one_line(tmp_path):
    path = tmp_path / "plays.npz"
    np.savez(path, **arrays())
    config = validate(text_config(path, "maml"))
    with pytest.raises(UserError, match="missing arrays"):
        build_new_clients(config, write_ratings(tmp_path / "r.npz"), build_datasets(config).train)


def test_new_writers_are_every_writer_of_the_file(tmp_path):
    rng = np.random.default_rng(0)
    writers = np.repeat(np.arange(10), 12)
    path = tmp_path / "femnist.npz"
    np.savez(path, images=rng.integers(0, 256, (120, 28, 28), dtype=np.uint8),
             labels=rng.integers(0, 62, 120), writer=writers,
             leaf_split=(np.arange(120) % 4 == 0).astype(np.uint8))
    config = load_config(None, ["data.dataset='femnist'", f"data.path='{path}'"])
    datasets = build_datasets(config)
    new = build_new_clients(config, path, datasets.train)
    assert new.num_clients == 10 == sum(side.num_clients for side in datasets)
    assert all(new.query_mask_of(i).sum() == 3 for i in range(10))  # LEAF's own split kept
