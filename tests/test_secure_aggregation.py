"""Secure aggregation's arithmetic (SecAgg+ fixed point, CKKS) against the plain weighted sum
and against Flower's own quantization functions."""

import numpy as np
import pytest
import torch
from flwr.common.secure_aggregation.quantization import dequantize, quantize
from hypothesis import given, settings, strategies as st

from fedmeta.build import build_experiment, build_summation
from fedmeta.config import load_config, validate
from fedmeta.engine.simulation import Simulation
from fedmeta.errors import UserError
from fedmeta.privacy.encryption import CkksKeys, ckks_sum
from fedmeta.privacy.secure_aggregation import secagg_sum
from fedmeta.server.aggregate import mean, plain_sum
from fedmeta.server.chain import Round


def deltas(clients: int, scale: float, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"w": scale * torch.randn(clients, 6, 5, generator=g, dtype=torch.float64),
            "b": scale * torch.randn(clients, 5, generator=g, dtype=torch.float64)}


@given(st.lists(st.integers(0, 2 ** 10), min_size=2 * 7, max_size=2 * 7))
@settings(max_examples=30, deadline=None)
def test_secagg_sum_is_flowers_quantize_sum_dequantize_on_grid_values(levels):
    """On values of the quantization grid the rounding is exact, so fedmeta's fixed point must
    equal Flower's quantize -> modular sum -> dequantize (+ its offset) bit for bit."""
    c, T = 1.0, 2 ** 10
    rows = torch.tensor(levels, dtype=torch.float64).view(2, 7) * (2 * c / T) - c
    summed, weight = secagg_sum(c, T, 2 ** 20, 1.0, seed=0)({"v": rows}, torch.ones(2), 0)
    quantized = [quantize([row.numpy()], c, T)[0] for row in rows]
    total = (quantized[0].astype(np.int64) + quantized[1]) % 2 ** 20
    flower = dequantize([total], c, T)[0] - c  # Flower's offset: -(clients - 1) * c
    assert weight.item() == 2.0
    np.testing.assert_allclose(summed["v"].numpy(), flower, rtol=0, atol=1e-12)


def test_secagg_mean_is_close_and_unbiased():
    d, w = deltas(8, 0.01), torch.tensor([10.0, 20, 30, 40, 50, 60, 70, 80])
    plain, total = plain_sum(d, w, 0)
    summation = secagg_sum(1.0, 2 ** 22, 2 ** 32, 1000.0, seed=3)
    runs = [summation(d, w, count) for count in range(50)]
    step = 2.0 / 2 ** 22  # one quantization level
    for key in d:
        exact = plain[key] / total
        means = torch.stack([s[key] / t for s, t in runs])
        # each client's rounding is within a level, scaled back by the quantized weights' sum
        assert (means - exact).abs().max() < 8 * step / (total / 1000)
        assert (means.mean(0) - exact).abs().max() < 2 * step / (total / 1000)


def test_secagg_overflow_of_a_too_small_modulus_shows():
    d, w = deltas(4, 0.5), torch.full((4,), 100.0)
    plain, total = plain_sum(d, w, 0)
    wrapped, weight = secagg_sum(8.0, 2 ** 22, 2 ** 23, 1000.0, seed=0)(d, w, 0)
    assert (wrapped["w"] / weight - plain["w"] / total).abs().max() > 1.0


@pytest.mark.parametrize("scale", [1e-3, 1e-1])
def test_ckks_sum_matches_the_plain_sum_to_1e_4_relative(scale):
    d, w = deltas(5, scale), torch.tensor([3.0, 1.0, 7.0, 2.0, 5.0])
    d["big"] = scale * torch.randn(5, 9000, dtype=torch.float64)  # spans several ciphertexts
    summed, total = ckks_sum(CkksKeys.generate())(d, w, 0)
    plain, plain_total = plain_sum(d, w, 0)
    assert total == plain_total
    for key in d:
        error = (summed[key] - plain[key]).norm() / plain[key].norm()
        assert error < 1e-4, (key, error)


def test_the_public_context_cannot_decrypt():
    from fedmeta.privacy.encryption import decrypt, encrypt, load_context

    keys = CkksKeys.generate()
    ciphertext = encrypt(load_context(keys.public), torch.ones(3), keys.slots)
    with pytest.raises(ValueError, match="secret"):
        decrypt(load_context(keys.public), ciphertext)
    np.testing.assert_allclose(decrypt(load_context(keys.secret), ciphertext), np.ones(3),
                               atol=1e-6)


def test_fixed_denominator_mean_through_a_secure_sum():
    d = deltas(3, 0.1)
    stage = mean(4.0, secagg_sum(1.0, 2 ** 22, 2 ** 32, 1.0, seed=0))
    rnd, _ = stage.apply(Round(d, torch.tensor([5.0, 6.0, 7.0])), stage.init(d))
    np.testing.assert_allclose(rnd.deltas["w"], d["w"].sum(0) / 4.0, atol=1e-5)


def test_under_dp_noise_the_secagg_sum_keeps_the_precision_of_its_levels():
    """DP's fixed-denominator mean gives every client coefficient 1; a client scales its vector
    by coefficient / max weight before quantizing, so the default max weight (1000) would
    cost three digits: the max weight is 1 there (`build.secagg_max_weight`)."""
    config = validate({"aggregation": {"secure": "secagg+"},
                       "privacy": {"noise_multiplier": 1.0, "clip_norm": 1.0}})
    d = deltas(3, 0.01)
    stage = mean(3.0, build_summation(config))
    rnd, _ = stage.apply(Round(d, torch.tensor([5.0, 6.0, 7.0])), stage.init(d))
    agg = config.aggregation
    level = 2 * agg.secagg_clipping_range / agg.secagg_quantization_range
    for key in d:
        assert (rnd.deltas[key] - d[key].sum(0) / 3).abs().max() < level


def test_a_client_weight_secagg_cannot_sum_is_refused_before_round_1():
    """Flower's SecAgg+ caps a client's weight at secagg_max_weight, so a larger client
    would make the weighted sum wrong without a word; under DP every weight is 1."""
    small = ["data.dataset=synthetic", "data.num_clients=10", "model.name=mlp",
             "aggregation.secure=secagg+", "aggregation.secagg_max_weight=5"]
    with pytest.raises(UserError, match="more than aggregation.secagg_max_weight"):
        Simulation(build_experiment(load_config(None, small))).check_data()
    dp = small + ["privacy.noise_multiplier=1.0", "privacy.clip_norm=1.0"]
    Simulation(build_experiment(load_config(None, dp))).check_secagg_weights([10 ** 6])
