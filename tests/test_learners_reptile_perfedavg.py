"""Reptile's client step against a manual SGD sequence; Per-FedAvg's gradient estimates
against explicit Hessians."""

import torch
import torch.nn.functional as F
from torch.func import grad

from fedmeta.learners.fomaml import FOMAML
from fedmeta.learners.perfedavg import PerFedAvg, PerFedAvgHF, hessian_vector_product
from fedmeta.learners.reptile import Reptile
from fedmeta.params import detached
from tiny import WAYS, feature_client, float_episodes, mlp_learner


def flat(params):
    return torch.cat([v.flatten() for v in params.values()])


def unflat(vector, like):
    out, start = {}, 0
    for key, value in like.items():
        out[key] = vector[start:start + value.numel()].view_as(value)
        start += value.numel()
    return out


def test_reptile_client_update_is_sgd_through_the_tasks():
    learner = mlp_learner(Reptile, dtype=torch.float32, inner_lr=0.1, inner_steps=2,
                          local_steps=2, tasks_per_step=2)
    params, client = learner.init_params(), feature_client()
    update = learner.client_update(params, client, torch.Generator().manual_seed(5))
    generator, local = torch.Generator().manual_seed(5), detached(params)
    for _ in range(2):
        episodes = learner.sampler.sample(client, 2, generator)
        for e in range(2):
            x = torch.cat([episodes.support_x[e], episodes.query_x[e]])
            y = torch.cat([episodes.support_y[e], episodes.query_y[e]])
            for _ in range(2):
                leaves = {k: v.requires_grad_() for k, v in local.items()}
                grads = torch.autograd.grad(F.cross_entropy(learner.forward(leaves, x), y),
                                            list(leaves.values()))
                local = {k: (v - 0.1 * g).detach() for (k, v), g in zip(leaves.items(), grads)}
    for key in params:
        torch.testing.assert_close(update.delta[key], local[key] - params[key])
    assert update.weight == len(client)


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
