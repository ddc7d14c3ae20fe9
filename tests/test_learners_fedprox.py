"""FedProx: its proximal transform against the closed form of gradient descent on a
quadratic, mu = 0 against FedAvg, vmap against the loop, a scheduled rate against the
same rate from the start."""

import torch

from fedmeta.engine.cohort import run_cohort
from fedmeta.learners.fedavg import FedAvg
from fedmeta.learners.fedprox import FedProx
from fedmeta.optim import apply_updates, proximal, sgd
from tiny import feature_client, mlp_learner


def test_the_proximal_term_gives_gradient_descent_on_the_regularized_quadratic():
    """On f(w) = 1/2 (w - c)' A (w - c) from w0, K steps of rate lr on f + mu/2 ||w - w0||^2:
    w_K - w* = (I - lr (A + mu I))^K (w0 - w*), w* = (A + mu I)^-1 (A c + mu w0)."""
    g = torch.Generator().manual_seed(0)
    B = torch.randn(4, 4, generator=g, dtype=torch.float64)
    A = B @ B.T / 4 + torch.eye(4, dtype=torch.float64)  # symmetric positive definite
    c, w0 = torch.randn(2, 4, generator=g, dtype=torch.float64)
    mu, lr, steps = 0.7, 0.1, 25
    transform = proximal(mu, sgd(lr))
    w, state = {"w": w0}, transform.init({"w": w0})
    for _ in range(steps):
        updates, state = transform.update({"w": A @ (w["w"] - c)}, state)
        w = apply_updates(w, updates)
    regularized = A + mu * torch.eye(4, dtype=torch.float64)
    optimum = torch.linalg.solve(regularized, A @ c + mu * w0)
    contraction = torch.linalg.matrix_power(torch.eye(4, dtype=torch.float64) - lr * regularized,
                                            steps)
    torch.testing.assert_close(w["w"], optimum + contraction @ (w0 - optimum), rtol=1e-12,
                               atol=1e-12)


def small(cls, **settings):
    """`cls` on a linear float32 model of 4 classes, batches of 8."""
    return mlp_learner(cls, hidden=(), ways=4, dtype=torch.float32, batch_size=8, **settings)


def update_of(learner, client, seed=3):
    return learner.client_update(learner.init_params(), client,
                                 torch.Generator().manual_seed(seed))


def test_without_the_term_fedprox_is_fedavg():
    client = feature_client()
    fedavg = update_of(small(FedAvg, local_steps=4), client)
    fedprox = update_of(small(FedProx, local_steps=4, proximal_mu=0.0), client)
    assert all(torch.equal(fedprox.delta[k], fedavg.delta[k]) for k in fedavg.delta)


def test_the_term_pulls_the_local_model_toward_the_global_one():
    client = feature_client()
    moved = [sum(float(v.norm() ** 2) for v in update_of(
        small(FedProx, local_steps=20, proximal_mu=mu), client).delta.values())
        for mu in (0.0, 1.0, 10.0)]
    assert moved[0] > moved[1] > moved[2]


def test_vmapped_clients_equal_looped_ones():
    learner = small(FedProx, local_steps=3, proximal_mu=0.5)
    clients = [feature_client(seed=s) for s in range(3)]
    params = learner.init_params()
    runs = [run_cohort(learner, params, clients,
                       [torch.Generator().manual_seed(s) for s in range(3)], execution)
            for execution in ("loop", "vmap")]
    for k in params:
        torch.testing.assert_close(runs[0].deltas[k], runs[1].deltas[k], rtol=1e-5, atol=1e-6)


def test_a_scheduled_rate_scales_the_proximal_step_too():
    client = feature_client()
    halved = small(FedProx, lr=0.1, local_steps=5, proximal_mu=2.0).at_local_rate(0.5)
    direct = small(FedProx, lr=0.05, local_steps=5, proximal_mu=2.0)
    a, b = update_of(halved, client), update_of(direct, client)
    for k in a.delta:
        torch.testing.assert_close(a.delta[k], b.delta[k], rtol=1e-5, atol=1e-6)
