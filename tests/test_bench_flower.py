"""Flower's simulation, the baseline of `fedmeta bench`, runs fedmeta's own client code: its
global params after a round equal fedmeta's weighted mean of the same clients' updates.
Slow (Ray starts), so out of the default run: `pytest -m slow`."""

import pytest
import torch

from fedmeta.build import build_experiment
from fedmeta.config import validate
from fedmeta.seeding import seeded
from test_bench import SMALL

flower_baseline = pytest.importorskip("fedmeta.bench.flower_baseline")


@pytest.mark.slow
def test_a_flower_round_is_the_weighted_mean_of_fedmeta_client_updates():
    config = {**SMALL["fedavg"], "server": {"clients_per_round": 30}}  # every client
    experiment = build_experiment(validate(config))
    params = experiment.learner.init_params()
    flower = flower_baseline.flower_final_params(experiment, rounds=1)
    updates = [experiment.learner.client_update(params, experiment.train.client(c),
                                                seeded(experiment.config.seed, 1, c))
               for c in range(experiment.train.num_clients)]
    total = sum(u.weight for u in updates)
    for key in params:
        expected = params[key] + sum(u.weight * u.delta[key] for u in updates) / total
        torch.testing.assert_close(flower[key], expected, atol=1e-6, rtol=1e-5)
