"""The split network: its explicit exchange gives the whole network's gradient (autograd on
ordinary modules), its traffic is what crosses, and protection clips and noises as stated."""

import math

import pytest
import torch
import torch.nn.functional as F
from scipy.optimize import brentq
from scipy.stats import norm

from fedmeta.optim import adam
from fedmeta.seeding import seeded
from fedmeta.vertical.protection import Protection
from fedmeta.vertical.split import SplitNetwork, predict, split_gradients, train_split

COLUMNS = (3, 5, 2)


def batch(n=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    xs = [torch.randn(n, c, generator=g) for c in COLUMNS]
    y = (xs[0][:, 0] + xs[1][:, 1] - xs[2][:, 0] > 0).long()
    return xs, y


def test_split_gradients_equal_the_whole_networks():
    torch.manual_seed(0)
    network = SplitNetwork.mlp(COLUMNS, hidden=6, embedding=4, top_hidden=5, num_classes=2)
    bottoms, top = network.init_params()
    xs, y = batch()
    bottom_grads, top_grads, _, _ = split_gradients(network, bottoms, top, xs, y)
    # the reference: one ordinary module graph, loss.backward()
    hs = torch.cat([m(x) for m, x in zip(network.bottoms, xs)], 1)
    F.cross_entropy(network.top(hs), y).backward()
    for module, grads in zip([*network.bottoms, network.top], [*bottom_grads, top_grads]):
        for name, param in module.named_parameters():
            torch.testing.assert_close(grads[name], param.grad, rtol=1e-5, atol=1e-7)


def test_traffic_is_the_other_parties_embeddings_and_their_gradients():
    torch.manual_seed(0)
    network = SplitNetwork.mlp(COLUMNS, hidden=6, embedding=4, top_hidden=5, num_classes=2)
    xs, y = batch(n=50)
    _, traffic, _, _ = train_split(network, xs, y, epochs=3, batch_size=16,
                                   optimizer=adam(0.01), generator=seeded(0))
    per_direction = 3 * 50 * 4 * 4 * (len(COLUMNS) - 1)  # epochs x rows x E x float32 x parties
    assert (traffic.up, traffic.down) == (per_direction, per_direction)


def test_split_training_learns():
    torch.manual_seed(0)
    network = SplitNetwork.mlp(COLUMNS, hidden=16, embedding=4, top_hidden=8, num_classes=2)
    xs, y = batch(n=400)
    state, _, losses, _ = train_split(network, xs, y, epochs=30, batch_size=32,
                                      optimizer=adam(0.01), generator=seeded(0))
    test_xs, test_y = batch(n=400, seed=1)
    accuracy = (predict(network, state, test_xs).argmax(1) == test_y).float().mean()
    assert losses[-1] < 0.5 * losses[0] and accuracy > 0.85


@pytest.mark.parametrize("noise, order", [("gaussian", 2), ("laplace", 1)])
def test_release_clips_then_noises_at_the_stated_scale(noise, order):
    protection = Protection(noise, clip=2.0, multiplier=1.5)
    rows = 10 * torch.randn(4000, 8, generator=torch.Generator().manual_seed(0))
    clipped = protection.clip_rows(rows)
    norms = torch.linalg.vector_norm(clipped, ord=order, dim=1)
    assert norms.max() <= 2.0 + 1e-5 and norms.min() > 1.99  # all these rows were longer
    noise_values = (protection.release(rows, seeded(1)) - clipped).flatten()
    scale = 1.5 * 2.0
    expected_std = scale if noise == "gaussian" else math.sqrt(2) * scale
    assert abs(noise_values.std().item() / expected_std - 1) < 0.03
    if noise == "laplace":  # mean absolute deviation of Laplace(0, b) is b
        assert abs(noise_values.abs().mean().item() / scale - 1) < 0.03


def gaussian_epsilon(sigma: float, delta: float) -> float:
    """The exact epsilon of the Gaussian mechanism, sensitivity 1 (Balle & Wang 2018, thm 8)."""
    def excess(eps):
        return (norm.cdf(-eps * sigma + 1 / (2 * sigma))
                - math.exp(eps) * norm.cdf(-eps * sigma - 1 / (2 * sigma)) - delta)
    return brentq(excess, 0, 100)


def test_epsilon_of_a_rows_releases():
    # k Gaussian releases of noise multiplier m/2 (sensitivity 2C) = one of m / (2 sqrt k)
    gaussian = Protection("gaussian", clip=1.0, multiplier=4.0)
    assert gaussian.epsilon(9, 1e-5) == pytest.approx(gaussian_epsilon(4.0 / 2 / 3, 1e-5),
                                                      rel=0.02)
    # one Laplace release of scale m C on L1 sensitivity 2C: pure epsilon 2 / m
    assert Protection("laplace", clip=1.0, multiplier=4.0).epsilon(1, 1e-12) == pytest.approx(
        0.5, rel=0.02)
    assert Protection().epsilon(1, 1e-5) == math.inf
    with pytest.raises(ValueError):
        Protection("gaussian", clip=None, multiplier=1.0)
