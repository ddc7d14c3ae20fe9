"""ANIL adapts only the head; Meta-SGD meta-learns its per-parameter inner learning rates."""

import torch
from torch.func import grad

from fedmeta.learners.anil import ANIL
from fedmeta.learners.maml import MAML
from fedmeta.learners.metasgd import MetaSGD
from tiny import feature_client, float_episodes, mlp_learner


def test_anil_inner_loop_leaves_the_body_unchanged():
    learner = mlp_learner(ANIL, inner_steps=3)
    params, episodes = learner.init_params(), float_episodes(num=1)
    fast = learner.adapt(params, episodes.support_x[0], episodes.support_y[0])
    for key, value in params.items():
        changed = not torch.equal(fast[key], value)
        assert changed == key.startswith("head."), key
    meta = grad(learner.meta_loss)(params, episodes)  # the outer loop still trains the body
    assert all(meta[k].abs().sum() > 0 for k in params if k.startswith("features."))


def test_metasgd_rates_start_at_inner_lr_and_reproduce_maml():
    learner = mlp_learner(MetaSGD, inner_lr=0.3, inner_steps=2)
    params = learner.init_params()
    weights = {k: v for k, v in params.items() if not k.startswith("lr.")}
    assert set(params) == set(weights) | {f"lr.{k}" for k in weights}
    assert all(torch.all(v == 0.3) for k, v in params.items() if k.startswith("lr."))
    episodes = float_episodes(num=1)
    maml = mlp_learner(MAML, inner_lr=0.3, inner_steps=2)
    torch.testing.assert_close(learner.meta_loss(params, episodes),
                               maml.meta_loss(weights, episodes))


def test_metasgd_rates_get_gradients_and_change_in_a_client_update():
    learner = mlp_learner(MetaSGD, inner_lr=0.3)
    params = learner.init_params()
    meta = grad(learner.meta_loss)(params, float_episodes(num=1))
    rates = [k for k in params if k.startswith("lr.")]
    assert all(meta[k].abs().sum() > 0 for k in rates)
    learner = mlp_learner(MetaSGD, inner_lr=0.3, dtype=torch.float32)
    params = learner.init_params()
    update = learner.client_update(params, feature_client(), torch.Generator().manual_seed(0))
    assert all(update.delta[k].abs().sum() > 0 for k in rates)
