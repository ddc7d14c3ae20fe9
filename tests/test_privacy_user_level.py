"""User-level DP (DP-FedAvg) stages against numpy and statistics; epsilon in a run's metrics
and summary; the budget stops training before it is exceeded; bad privacy configs refused."""

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from hypothesis.extra.numpy import arrays

from fedmeta.build import build_experiment
from fedmeta.config import load_config
from fedmeta.engine.simulation import Simulation
from fedmeta.errors import UserError
from fedmeta.privacy.accountant import epsilon, without_replacement_epsilon
from fedmeta.privacy.user_level import (adaptive_clipping, adaptive_noise_split,
                                        client_norms, clip_updates, gaussian_noise)
from fedmeta.server import Round
from fedmeta.server.aggregate import mean
from test_cli import demo

finite = st.floats(-1e3, 1e3, allow_nan=False, width=32)


@given(arrays(np.float32, st.tuples(st.integers(1, 8), st.integers(1, 5)), elements=finite),
       arrays(np.float32, st.tuples(st.just(8), st.integers(1, 3), st.integers(1, 3)),
              elements=finite),
       st.floats(1e-3, 1e2))
@settings(max_examples=60, deadline=None)
def test_every_clipped_client_update_has_norm_at_most_c(a, b, clip):
    clients = a.shape[0]
    deltas = {"a": torch.from_numpy(a), "b": torch.from_numpy(b[:clients])}
    before = client_norms(deltas)
    clipped, _ = clip_updates(clip).apply(Round(deltas, torch.ones(clients)), {})
    after = client_norms(clipped.deltas)
    assert (after <= clip * (1 + 1e-5)).all()
    small = before <= clip
    for key in deltas:  # updates already within the bound are untouched
        torch.testing.assert_close(clipped.deltas[key][small], deltas[key][small])


def test_private_mean_is_the_sum_over_the_expected_cohort():
    deltas = {"w": torch.arange(12.0).view(3, 4)}
    stage = mean(4.0)
    rnd, _ = stage.apply(Round(deltas, torch.tensor([1.0, 5.0, 9.0])), stage.init(deltas))
    np.testing.assert_allclose(rnd.deltas["w"].numpy(), np.arange(12.0).reshape(3, 4).sum(0) / 4)
    assert rnd.aggregated


def test_noise_has_the_configured_std_and_is_reproducible():
    stage, std = gaussian_noise(1.5, expected_clients=10, seed=7), 1.5 * 2.0 / 10
    zero = Round({"w": torch.zeros(200_000, dtype=torch.float64)}, torch.ones(1),
                 aggregated=True, clip_norm=2.0)
    state = stage.init({})
    first, state = stage.apply(zero, state)
    noise = first.deltas["w"]
    # the sample std of n normal draws has standard error std / sqrt(2n) ~ 0.16% here
    assert abs(noise.std().item() / std - 1) < 0.01
    assert abs(noise.mean().item()) < 5 * std / len(noise) ** 0.5
    second, state = stage.apply(zero, state)
    assert int(state["count"]) == 2 and not torch.equal(second.deltas["w"], noise)
    again, _ = stage.apply(zero, stage.init({}))
    assert torch.equal(again.deltas["w"], noise)
    with pytest.raises(ValueError, match="after clipping and an aggregator"):
        stage.apply(Round({"w": torch.zeros(3)}, torch.ones(2), aggregated=True), stage.init({}))


DP = ["data.dataset='synthetic'", "data.num_clients=50", "model.name='mlp'", "model.hidden=8",
      "task.ways=3", "task.shots=2", "task.queries=1", "eval.ways=3", "eval.shots=2", "eval.every=0",
      "eval.episodes=5", "server.clients_per_round=10", "server.sampling='poisson'",
      "server.rounds=4", "privacy.noise_multiplier=1.0", "privacy.clip_norm=0.5"]


def run_metrics(overrides: list[str]) -> list[dict]:
    logged = []
    Simulation(build_experiment(load_config(None, overrides))).run(
        [lambda r, p, s, metrics: logged.append(metrics)])
    return logged


def test_each_round_reports_the_accountants_epsilon():
    logged = run_metrics(DP)
    assert [m["epsilon"] for m in logged] == [
        pytest.approx(epsilon(1.0, 10 / 50, t, 1e-5)) for t in range(1, 5)]


def test_the_budget_stops_before_a_round_would_exceed_it():
    target = (epsilon(1.0, 0.2, 2, 1e-5) + epsilon(1.0, 0.2, 3, 1e-5)) / 2
    logged = run_metrics(DP + [f"privacy.target_epsilon={target}"])
    assert len(logged) == 2 and logged[-1]["epsilon"] <= target


def test_summary_has_a_privacy_section(tmp_path):
    out = tmp_path / "run"
    assert demo(out, "server.sampling='poisson'", "privacy.noise_multiplier=2.0",
                "privacy.clip_norm=1.0", "privacy.canaries=10") == 0
    privacy = json.loads((out / "summary.json").read_text())["privacy"]
    # 2 of the 25 training alphabets a round (5 of the 30 background ones validate)
    assert privacy["epsilon"] == pytest.approx(epsilon(2.0, 2 / 25, 2, 1e-5))
    assert privacy["clip_norm"] == 1.0 and privacy["accountant"] == "rdp"
    assert privacy["audit"]["canaries"] == 10 and privacy["audit"]["epsilon_estimate"] >= 0


@pytest.mark.parametrize("overrides, message", [
    (["privacy.noise_multiplier=1.0"], "needs privacy.clip_norm"),
    (["privacy.noise_multiplier=1.0", "privacy.clip_norm=1.0", "privacy.accountant='pld'"],
     "accounted by RDP"),
    (["privacy.target_epsilon=1.0"], "needs privacy.noise_multiplier"),
])
def test_inconsistent_privacy_configs_are_refused(overrides, message):
    with pytest.raises(UserError, match=message):
        load_config(None, overrides)


def test_a_budget_smaller_than_one_round_is_refused():
    with pytest.raises(UserError, match="less than one round spends"):
        build_experiment(load_config(None, DP + ["privacy.target_epsilon=0.001"]))


def test_adaptive_clipping_tracks_the_median_update_norm():
    """Andrew et al. 2021: without count noise, C settles where half the clients are within."""
    norms = torch.linspace(0.5, 4.5, 41)  # median 2.5
    deltas = {"w": torch.randn(41, 7, generator=torch.Generator().manual_seed(0))}
    deltas["w"] = deltas["w"] / deltas["w"].norm(dim=1, keepdim=True) * norms.unsqueeze(1)
    stage = adaptive_clipping(0.1, 0.5, 0.2, count_noise=0.0, expected_clients=41, seed=0)
    state = stage.init({})
    for _ in range(200):
        rnd, state = stage.apply(Round(deltas, torch.ones(41)), state)
    assert float(state["clip_norm"]) == pytest.approx(2.5, rel=0.1)
    assert rnd.clip_norm == pytest.approx(float(state["clip_norm"]), rel=0.05)
    assert (client_norms(rnd.deltas) <= rnd.clip_norm * (1 + 1e-5)).all()


def test_adaptive_clipping_keeps_the_total_noise_multiplier():
    sigma_updates = adaptive_noise_split(1.0, count_noise=5.0)
    assert sigma_updates ** -2 + (2 * 5.0) ** -2 == pytest.approx(1.0)
    with pytest.raises(ValueError, match="must exceed half"):
        adaptive_noise_split(1.0, count_noise=0.4)


def test_a_dp_run_with_adaptive_clipping_moves_its_clip_norm():
    experiment = build_experiment(load_config(None, DP + ["privacy.adaptive_clipping=true",
                                                          "privacy.clip_count_noise=5.0"]))
    params = experiment.learner.init_params()
    state = experiment.pipeline.init(params)
    simulation = Simulation(experiment)
    for r in range(1, 4):
        params, state, _ = simulation.round(r, params, state)
    assert float(state["client"]["clip"]["clip_norm"]) != 0.5 and int(state["client"]["clip"]["count"]) == 3


def test_a_dp_round_with_no_trained_client_still_releases_noise():
    experiment = build_experiment(load_config(None, DP + ["task.queries=200"]))  # none can
    params = experiment.learner.init_params()
    new, state, metrics = Simulation(experiment).round(1, params,
                                                       experiment.pipeline.init(params))
    assert metrics["clients"] == 0 and metrics["skipped"] > 0
    assert all(not torch.equal(new[k], params[k]) for k in params)


def test_fixed_size_cohorts_are_accounted_without_replacement():
    uniform = [o for o in DP if o != "server.sampling='poisson'"] + ["server.sampling='uniform'"]
    logged = run_metrics(uniform)
    assert [m["clients"] + m["skipped"] for m in logged] == [10] * 4
    assert logged[-1]["epsilon"] == pytest.approx(without_replacement_epsilon(1.0, 10, 50, 4,
                                                                              1e-5))
