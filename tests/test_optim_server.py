import numpy as np
import pytest
import torch

from fedmeta.optim import adam, apply_updates, sgd, yogi
from fedmeta.server import Round, chain, server_optimizer, weighted_mean


def quadratic_params():
    return {"w": torch.tensor([1.0, -2.0, 3.0]), "b": torch.tensor([[0.5]])}


def grads_of(params):
    return {k: 2 * v for k, v in params.items()}  # gradient of sum(v^2)


@pytest.mark.parametrize("ours, theirs", [
    (lambda: sgd(0.1), lambda p: torch.optim.SGD(p, lr=0.1)),
    (lambda: sgd(0.1, momentum=0.9), lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9)),
    (lambda: adam(0.05), lambda p: torch.optim.Adam(p, lr=0.05)),
])
def test_optimizers_match_torch(ours, theirs):
    params = quadratic_params()
    reference = {k: v.clone().requires_grad_() for k, v in params.items()}
    optimizer, torch_optimizer = ours(), theirs(list(reference.values()))
    state = optimizer.init(params)
    for _ in range(5):
        updates, state = optimizer.update(grads_of(params), state)
        params = apply_updates(params, updates)
        torch_optimizer.zero_grad()
        sum(v.pow(2).sum() for v in reference.values()).backward()
        torch_optimizer.step()
    for k in params:
        torch.testing.assert_close(params[k], reference[k].detach())


def test_yogi_second_moment_is_additive():
    # Zaheer et al. 2018: v_t = v_{t-1} - (1 - b2) g^2 sign(v_{t-1} - g^2); no bias correction.
    optimizer = yogi(0.1, b1=0.0, b2=0.9, eps=1e-3)
    state = optimizer.init({"w": torch.zeros(2)})
    g = torch.tensor([2.0, -1.0])
    updates, state = optimizer.update({"w": g}, state)
    v = 0 - 0.1 * g * g * torch.sign(0 - g * g)
    torch.testing.assert_close(state["v"]["w"], v)
    torch.testing.assert_close(updates["w"], -0.1 * g / (v.sqrt() + 1e-3))


def test_weighted_mean_and_server_sgd_match_numpy():
    rng = np.random.default_rng(0)
    deltas = rng.normal(size=(4, 3, 2)).astype(np.float32)
    weights = np.array([1.0, 5.0, 2.0, 10.0], dtype=np.float32)
    pipeline = chain(weighted_mean(), server_optimizer(sgd(0.5)))
    state = pipeline.init({"w": torch.zeros(3, 2)})
    rnd, _ = pipeline.apply(Round({"w": torch.from_numpy(deltas)}, torch.from_numpy(weights)),
                            state)
    expected = 0.5 * np.average(deltas, axis=0, weights=weights)
    np.testing.assert_allclose(rnd.deltas["w"].numpy(), expected, rtol=1e-6)
    assert rnd.aggregated


def test_server_optimizer_needs_an_aggregator_first():
    pipeline = chain(server_optimizer(sgd(1.0)))
    with pytest.raises(ValueError, match="after an aggregator"):
        pipeline.apply(Round({"w": torch.zeros(2, 3)}, torch.ones(2)),
                       pipeline.init({"w": torch.zeros(3)}))
