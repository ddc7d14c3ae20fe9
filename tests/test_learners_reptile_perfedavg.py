"""Reptile's client step and meta-test against torch.optim's SGD and Adam; Per-FedAvg's gradient
estimates against explicit Hessians."""

import pytest
import torch
import torch.nn.functional as F
from torch.func import grad

from fedmeta.learners.fomaml import FOMAML
from fedmeta.learners.perfedavg import PerFedAvg, PerFedAvgHF, hessian_vector_product
from fedmeta.learners.reptile import Reptile
from tiny import WAYS, feature_client, float_episodes, mlp_learner


def flat(params):
    return torch.cat([v.flatten() for v in params.values()])


def unflat(vector, like):
    out, start = {}, 0
    for key, value in like.items():
        out[key] = vector[start:start + value.numel()].view_as(value)
        start += value.numel()
    return out


TORCH_OPTIMIZERS = {"sgd": lambda leaves, lr: torch.optim.SGD(leaves, lr=lr),
                    "adam": lambda leaves, lr: torch.optim.Adam(leaves, lr=lr, betas=(0.0, 0.999))}


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_reptile_client_update_is_its_inner_optimizer_through_the_tasks(optimizer):
    """Against torch.optim's SGD and Adam (beta1 = 0, Nichol et al.), one optimizer whose
    moments carry across the round's tasks."""
    learner = mlp_learner(Reptile, dtype=torch.float32, inner_lr=0.1, inner_steps=2,
                          local_steps=2, tasks_per_step=2, inner_optimizer=optimizer)
    params, client = learner.init_params(), feature_client()
    update = learner.client_update(params, client, torch.Generator().manual_seed(5))
    generator = torch.Generator().manual_seed(5)
    leaves = {k: v.clone().requires_grad_() for k, v in params.items()}
    reference = TORCH_OPTIMIZERS[optimizer](list(leaves.values()), 0.1)
    for _ in range(2):
        episodes = learner.sampler.sample(client, 2, generator)
        for e in range(2):
            x = torch.cat([episodes.support_x[e], episodes.query_x[e]])
            y = torch.cat([episodes.support_y[e], episodes.query_y[e]])
            for _ in range(2):
                reference.zero_grad()
                F.cross_entropy(learner.forward(leaves, x), y).backward()
                reference.step()
    for key in params:
        torch.testing.assert_close(update.delta[key], leaves[key].detach() - params[key])
    assert update.weight == len(client)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_reptile_meta_test_runs_a_fresh_inner_optimizer_on_the_support(optimizer):
    learner = mlp_learner(Reptile, dtype=torch.float32, inner_lr=0.05, eval_inner_steps=3,
                          inner_optimizer=optimizer)
    params, episodes = learner.init_params(), float_episodes(num=1)
    sx, sy = episodes.support_x[0].float(), episodes.support_y[0]
    adapted = learner.eval_adapt(params, sx, sy)
    leaves = {k: v.clone().requires_grad_() for k, v in params.items()}
    reference = TORCH_OPTIMIZERS[optimizer](list(leaves.values()), 0.05)
    for _ in range(3):
        reference.zero_grad()
        F.cross_entropy(learner.forward(leaves, sx), sy).backward()
        reference.step()
    for key in params:
        torch.testing.assert_close(adapted[key], leaves[key].detach())


def test_hessian_vector_product_matches_the_explicit_hessian():
    learner = mlp_learner(PerFedAvgHF, hidden=(3,))
    params, episodes = learner.init_params(), float_episodes(num=1)
    loss = lambda p: learner.loss(p, episodes.support_x[0], episodes.support_y[0])  # noqa: E731
    hessian = torch.autograd.functional.hessian(lambda v: loss(unflat(v, params)), flat(params))
    vector = torch.randn(hessian.shape[0], dtype=torch.float64,
                         generator=torch.Generator().manual_seed(3))
    hv = hessian_vector_product(loss, params, unflat(vector, params))
    torch.testing.assert_close(flat(hv), hessian @ vector)


def test_perfedavg_hf_gradient_is_the_corrected_query_gradient():
    learner = mlp_learner(PerFedAvgHF, hidden=(3,), inner_lr=0.2)
    assert learner.sampler.queries == 2 * 3  # D' and D'' halves of each class's queries
    params, episodes = learner.init_params(), float_episodes(num=1, queries=4)
    sx, sy, qx, qy = (t[0] for t in (episodes.support_x, episodes.support_y,
                                     episodes.query_x, episodes.query_y))
    by_class = lambda t, half: t.view(WAYS, 4, *t.shape[1:])[:, half].flatten(0, 1)  # noqa: E731
    d1, d2 = (by_class(qx, slice(0, 2)), by_class(qy, slice(0, 2))), \
             (by_class(qx, slice(2, 4)), by_class(qy, slice(2, 4)))
    w = flat(params)
    loss_on = lambda x, y: (lambda v: learner.loss(unflat(v, params), x, y))  # noqa: E731
    adapted = w - 0.2 * torch.func.grad(loss_on(sx, sy))(w)
    g = torch.func.grad(loss_on(*d1))(adapted)
    expected = g - 0.2 * torch.autograd.functional.hessian(loss_on(*d2), w) @ g
    actual, _ = learner.local_gradient(params, episodes)
    torch.testing.assert_close(flat(actual), expected)


def test_perfedavg_fo_gradient_is_fomaml_with_one_inner_step():
    episodes = float_episodes()
    learner = mlp_learner(PerFedAvg, inner_lr=0.2, inner_steps=3)  # trains with one step
    fomaml = mlp_learner(FOMAML, inner_lr=0.2, inner_steps=1)
    params = learner.init_params()
    actual, loss = learner.local_gradient(params, episodes)
    torch.testing.assert_close(flat(actual), flat(grad(fomaml.meta_loss)(params, episodes)))
    torch.testing.assert_close(loss, fomaml.meta_loss(params, episodes))
