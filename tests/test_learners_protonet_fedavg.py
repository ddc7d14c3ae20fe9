"""ProtoNet logits against numpy; FedAvg's local SGD against a manual computation; FedAvg's
meta-test rules (nearest class mean, fine-tuning)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fedmeta.data import EpisodeSampler
from fedmeta.learners.fedavg import FedAvg, FedAvgFT
from fedmeta.learners.protonet import ProtoNet
from fedmeta.params import detached
from tiny import feature_client, float_episodes, mlp_learner


def numpy_prototype_logits(sx, sy, qx):
    protos = np.stack([sx[sy == c].mean(0) for c in range(sy.max() + 1)])
    return -np.array([[((q - p) ** 2).sum() for p in protos] for q in qx])


def test_protonet_logits_match_numpy():
    learner = mlp_learner(ProtoNet, hidden=(), ways=None)  # identity embedding
    episodes = float_episodes(num=1)
    sx, sy, qx = episodes.support_x[0], episodes.support_y[0], episodes.query_x[0]
    params = learner.init_params()
    logits = learner.query_logits(params, learner.adapt(params, sx, sy), qx)
    np.testing.assert_allclose(logits.numpy(), numpy_prototype_logits(sx.numpy(), sy.numpy(),
                                                                      qx.numpy()), rtol=1e-10)


def test_fedavg_client_update_on_a_linear_model_is_minibatch_sgd():
    learner = mlp_learner(FedAvg, hidden=(), ways=4, lr=0.5, dtype=torch.float32,
                          local_steps=3, batch_size=10)
    params, client = learner.init_params(), feature_client()
    update = learner.client_update(params, client, torch.Generator().manual_seed(7))
    steps = torch.rand(3, len(client), generator=torch.Generator().manual_seed(7)).argsort(1)
    w, b = params["head.weight"].clone(), params["head.bias"].clone()
    for picks in steps[:, :10]:
        assert len(set(picks.tolist())) == 10  # without replacement
        x, y = client.x[picks], client.y[picks]
        residual = (torch.softmax(x @ w.T + b, 1) - F.one_hot(y, 4)) / len(y)  # dCE/dlogits
        w, b = w - 0.5 * residual.T @ x, b - 0.5 * residual.sum(0)
    torch.testing.assert_close(update.delta["head.weight"], w - params["head.weight"])
    torch.testing.assert_close(update.delta["head.bias"], b - params["head.bias"])


def test_fedavg_rejects_labels_beyond_its_global_head():
    learner = mlp_learner(FedAvg, hidden=(), ways=3, dtype=torch.float32)
    with pytest.raises(ValueError, match="global labels in 0..2"):
        learner.client_update(learner.init_params(), feature_client(classes=4),
                              torch.Generator().manual_seed(0))


def test_fedavg_scores_queries_by_nearest_class_mean_of_features():
    learner = mlp_learner(FedAvg, hidden=(), ways=9, dtype=torch.float64)
    episodes = float_episodes(num=1)
    params = learner.init_params()
    sx, sy, qx = episodes.support_x[0], episodes.support_y[0], episodes.query_x[0]
    logits = learner.query_logits(params, learner.adapt(params, sx, sy), qx)
    np.testing.assert_allclose(logits.numpy(), numpy_prototype_logits(sx.numpy(), sy.numpy(),
                                                                      qx.numpy()), rtol=1e-10)


def test_fedavg_ft_fine_tuning_fits_the_support_set():
    learner = mlp_learner(FedAvgFT, hidden=(16,), ways=9, dtype=torch.float32,
                          finetune_steps=40, finetune_lr=0.5)
    client = feature_client(classes=3, per_class=10)
    episodes = EpisodeSampler(3, 5, 5).sample(client, 1, torch.Generator().manual_seed(0))
    params = learner.init_params()
    sx, sy = episodes.support_x[0], episodes.support_y[0]
    support = lambda state: (learner.query_logits(params, state, sx).argmax(1) == sy).float()  # noqa: E731
    fresh = {**detached(params), "head.weight": torch.zeros(3, 16), "head.bias": torch.zeros(3)}
    tuned = learner.adapt(params, sx, sy)
    assert tuned["head.weight"].shape == (3, 16)
    assert support(fresh).mean() < 0.5  # a zero head predicts class 0 for everything
    assert support(tuned).mean() >= 0.9
    assert not torch.equal(tuned["features.1.weight"], params["features.1.weight"])
    assert learner.accuracy(params, episodes).item() > 0.5

