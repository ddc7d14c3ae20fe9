"""Robust aggregators against numpy/scipy references and brute-force Krum, their breakdown
under outliers, norm bounding, and the config rules around them."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from fedmeta.build import build_pipeline
from fedmeta.config import load_config
from fedmeta.errors import UserError
from fedmeta.server import Round
from fedmeta.server.robust import (coordinate_median, krum, krum_scores, norm_bounding,
                                   trim_count, trimmed_mean)

SYNTHETIC = ["data.dataset=synthetic", "data.num_clients=20", "model.name=mlp",
             "learner.algorithm=fedavg"]


def stacked(count: int, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"w": torch.randn(count, 3, 2, generator=g, dtype=torch.float64),
            "b": torch.randn(count, 4, generator=g, dtype=torch.float64)}


def aggregate(stage, deltas):
    rnd, _ = stage.apply(Round(deltas, torch.rand(len(deltas["w"])) + 1), stage.init(deltas))
    assert rnd.aggregated
    return rnd.deltas


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 12), st.integers(0, 10**6))
def test_coordinate_median_is_numpys(count, seed):
    deltas = stacked(count, seed)
    result = aggregate(coordinate_median(), deltas)
    for k, v in deltas.items():
        np.testing.assert_allclose(result[k].numpy(), np.median(v.numpy(), axis=0), rtol=1e-12)


@settings(max_examples=40, deadline=None)
@given(st.integers(3, 12), st.floats(0.0, 0.45), st.integers(0, 10**6))
def test_trimmed_mean_is_scipys(count, fraction, seed):
    deltas = stacked(count, seed)
    result = aggregate(trimmed_mean(fraction), deltas)
    for k, v in deltas.items():
        expected = stats.trim_mean(v.numpy(), trim_count(count, fraction) / count, axis=0)
        np.testing.assert_allclose(result[k].numpy(), expected, rtol=1e-10)


def brute_force_krum_scores(rows: np.ndarray, byzantine: int) -> np.ndarray:
    """Blanchard et al.'s score, one row at a time."""
    scores = []
    for i, row in enumerate(rows):
        distances = sorted(float(np.sum((row - other) ** 2))
                           for j, other in enumerate(rows) if j != i)
        scores.append(sum(distances[:max(len(rows) - byzantine - 2, 1)]))
    return np.array(scores)


@settings(max_examples=30, deadline=None)
@given(st.integers(2, 10), st.integers(0, 4), st.integers(0, 10**6))
def test_krum_scores_match_brute_force(count, byzantine, seed):
    rows = torch.randn(count, 7, generator=torch.Generator().manual_seed(seed),
                       dtype=torch.float64)
    np.testing.assert_allclose(krum_scores(rows, byzantine).numpy(),
                               brute_force_krum_scores(rows.numpy(), byzantine), rtol=1e-9)


def honest_and_outliers(honest: int, outliers: int, scale: float, seed: int = 0):
    """Honest deltas near 1.0 and outliers at +-scale, stacked honest first."""
    g = torch.Generator().manual_seed(seed)
    good = 1.0 + 0.1 * torch.randn(honest, 5, generator=g, dtype=torch.float64)
    bad = scale * torch.sign(torch.randn(outliers, 5, generator=g, dtype=torch.float64))
    return {"w": torch.cat([good, bad])}, good


@settings(max_examples=30, deadline=None)
@given(st.integers(3, 12), st.data(), st.floats(1e2, 1e12))
def test_robust_rules_stay_with_the_honest_majority(honest, data, scale):
    outliers = data.draw(st.integers(0, honest - 1))
    fraction = outliers / (honest + outliers) + 1e-9
    deltas, good = honest_and_outliers(honest, outliers, scale)
    low, high = good.min(0).values, good.max(0).values
    stages = [coordinate_median(), trimmed_mean(min(fraction, 0.49))]
    if honest > outliers + 2:  # Krum's condition C > 2f + 2
        stages += [krum(fraction), krum(fraction, multi=True)]
    for stage in stages:
        result = aggregate(stage, deltas)["w"]
        assert bool(((result >= low - 1e-9) & (result <= high + 1e-9)).all())


def test_the_plain_mean_is_dragged_by_one_outlier():
    deltas, good = honest_and_outliers(9, 1, 1e6)
    assert float(deltas["w"].mean(0).abs().min()) > 1e4 > float(good.abs().max())


def test_multi_krum_averages_the_honest_cluster():
    deltas, good = honest_and_outliers(8, 2, 50.0)
    result = aggregate(krum(0.2, multi=True), deltas)["w"]
    torch.testing.assert_close(result, good.mean(0))  # C - f = 8 selected: all the honest


def test_krum_of_one_client_is_that_client():
    deltas = stacked(1, 0)
    assert all(torch.equal(aggregate(krum(0.2), deltas)[k], v[0]) for k, v in deltas.items())


def test_norm_bounding_caps_each_update_and_keeps_its_direction():
    deltas = {"w": torch.tensor([[3.0, 4.0], [0.3, 0.4]]), "b": torch.zeros(2, 1)}
    stage = norm_bounding(1.0)
    rnd, _ = stage.apply(Round(deltas, torch.ones(2)), stage.init(deltas))
    torch.testing.assert_close(rnd.deltas["w"], torch.tensor([[0.6, 0.8], [0.3, 0.4]]))
    assert not rnd.aggregated and rnd.clip_norm is None  # not a DP clip: no noise scale


@pytest.mark.parametrize("rule", ["median", "trimmed-mean", "krum", "multi-krum"])
def test_configured_rules_replace_the_mean(rule):
    config = load_config(None, SYNTHETIC + [f"aggregation.rule={rule}",
                                            "aggregation.norm_bound=10.0"])
    pipeline = build_pipeline(config, 20)
    deltas, good = honest_and_outliers(8, 2, 1e3)
    params = {"w": torch.zeros(5, dtype=torch.float64)}
    rnd, _ = pipeline.apply(Round(deltas, torch.ones(10)), pipeline.init(params))
    assert float(rnd.deltas["w"].abs().max()) < 2  # server SGD of lr 1: the step is the aggregate


@pytest.mark.parametrize("extra, message", [
    (["aggregation.secure=secagg+"], "hides"),
    (["privacy.clip_norm=1.0", "privacy.noise_multiplier=1.0"], "sensitivity"),
])
def test_robust_rules_refuse_what_they_cannot_do(extra, message):
    with pytest.raises(UserError, match=message):
        load_config(None, SYNTHETIC + ["aggregation.rule=median"] + extra)


def test_trim_count_leaves_at_least_one_value():
    assert [trim_count(c, 0.45) for c in (1, 2, 3, 10)] == [0, 0, 1, 4]
    assert trim_count(10, 0.2) == 2 and math.floor(0.2 * 10) == 2
