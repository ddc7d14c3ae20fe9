"""MAML's meta-gradient against finite differences; FOMAML's against a manual first-order
computation."""

import torch
import torch.nn.functional as F
from torch.func import grad

from fedmeta.learners.fomaml import FOMAML
from fedmeta.learners.maml import MAML
from fedmeta.params import detached
from tiny import float_episodes, mlp_learner


def flat(params):
    return torch.cat([v.flatten() for v in params.values()])


def test_maml_meta_gradient_matches_central_finite_differences():
    learner = mlp_learner(MAML, inner_lr=0.3, inner_steps=2)
    params, episodes = learner.init_params(), float_episodes(num=1)
    analytic = flat(grad(learner.meta_loss)(params, episodes))
    numeric, eps = [], 1e-6
    for name, value in params.items():
        for i in range(value.numel()):
            shifted = []
            for sign in (1, -1):
                moved = detached(params)
                moved[name].view(-1)[i] += sign * eps
                shifted.append(learner.meta_loss(moved, episodes))
            numeric.append((shifted[0] - shifted[1]) / (2 * eps))
    numeric = torch.stack(numeric)
    assert numeric.norm() > 1e-3
    assert (analytic - numeric).norm() / numeric.norm() < 1e-4


def test_fomaml_gradient_is_the_query_gradient_at_the_adapted_weights():
    learner = mlp_learner(FOMAML, inner_lr=0.3, inner_steps=2)
    params, episodes = learner.init_params(), float_episodes(num=1)
    sx, sy, qx, qy = (t[0] for t in (episodes.support_x, episodes.support_y,
                                     episodes.query_x, episodes.query_y))
    fast = detached(params)
    for _ in range(2):  # manual inner loop with torch.autograd
        leaves = {k: v.requires_grad_() for k, v in fast.items()}
        loss = F.cross_entropy(learner.forward(leaves, sx), sy)
        grads = torch.autograd.grad(loss, list(leaves.values()))
        fast = {k: (v - 0.3 * g).detach() for (k, v), g in zip(leaves.items(), grads)}
    leaves = {k: v.requires_grad_() for k, v in fast.items()}
    expected = torch.autograd.grad(F.cross_entropy(learner.forward(leaves, qx), qy),
                                   list(leaves.values()))
    first_order = flat(grad(learner.meta_loss)(params, episodes))
    torch.testing.assert_close(first_order, torch.cat([g.flatten() for g in expected]))
    second_order = flat(grad(mlp_learner(MAML, inner_lr=0.3, inner_steps=2).meta_loss)(
        params, episodes))
    assert (first_order - second_order).norm() > 1e-6  # the dropped term is not zero


def test_meta_test_adapts_for_eval_inner_steps():
    learner = mlp_learner(MAML, inner_lr=0.3, inner_steps=1)
    assert learner.eval_inner_steps == 2
    episodes, params = float_episodes(num=1), learner.init_params()
    sx, sy = episodes.support_x[0], episodes.support_y[0]
    twice = learner.adapt(learner.adapt(params, sx, sy), sx, sy)
    for key, value in learner.eval_adapt(params, sx, sy).items():
        torch.testing.assert_close(value, twice[key])
