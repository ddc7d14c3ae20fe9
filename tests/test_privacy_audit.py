"""The canary audit (Andrew et al. 2023): large leakage without DP, an estimate below the
accountant's epsilon with it, and less leakage with more noise."""

import pytest
import torch

from fedmeta.build import build_experiment
from fedmeta.config import load_config
from fedmeta.engine.simulation import Simulation
from fedmeta.privacy.audit import CanaryAudit

AUDITED = ["data.dataset='synthetic'", "data.num_clients=200", "model.name='mlp'",
           "model.hidden=16", "task.ways=3", "task.shots=2", "eval.ways=3", "eval.shots=2",
           "eval.every=0", "server.clients_per_round=20", "server.sampling='poisson'",
           "server.rounds=30", "learner.local_steps=2", "privacy.canaries=100",
           "privacy.clip_norm=1.0"]


def audit(*overrides: str) -> tuple[dict, float]:
    experiment = build_experiment(load_config(None, AUDITED + list(overrides)))
    logged = []
    params = Simulation(experiment).run([lambda r, p, s, m: logged.append(m["canaries"])])
    assert sum(logged) > 0  # canaries joined rounds
    spent = experiment.privacy.epsilon_after(30) if experiment.privacy else float("inf")
    return experiment.audit.estimate(experiment.learner.init_params(), params, 1e-5), spent


@pytest.fixture(scope="module")
def runs():
    return {sigma: audit(f"privacy.noise_multiplier={sigma}") for sigma in (0.0, 1.0)}


def test_without_noise_the_canaries_are_plainly_visible(runs):
    estimate, _ = runs[0.0]
    assert estimate["epsilon_estimate"] > 3
    assert estimate["inserted_cosine_mean"] > 5 * estimate["cosine_std"] / 10  # 10 = sqrt(100)


def test_with_noise_the_estimate_sits_below_the_accountants_epsilon(runs):
    estimate, spent = runs[1.0]
    assert 0 <= estimate["epsilon_estimate"] < spent
    assert estimate["epsilon_estimate"] < runs[0.0][0]["epsilon_estimate"]


def test_never_inserted_directions_are_orthogonal_to_a_change_made_of_inserted_ones():
    template = {"w": torch.zeros(40, 50), "b": torch.zeros(50)}
    audit = CanaryAudit(template, num_canaries=30, norm=1.0, sample_rate=1.0, seed=3)
    updates = audit.round_updates(1)
    assert updates["w"].shape == (30, 40, 50)  # every canary joins at rate 1
    final = {k: v.sum(0) for k, v in updates.items()}
    result = audit.estimate(template, final, 1e-5)
    assert result["inserted_cosine_mean"] > 0.15  # 1/sqrt(30) of a sum of 30 near-orthogonal
    assert abs(result["unobserved_cosine_mean"]) < 0.02
    assert result["epsilon_estimate"] > 10
