"""Li et al. 2022's label-leakage attacks on the gradients a non-label party receives: near
perfect unprotected on an imbalanced binary task, near chance under strong noise."""

import pytest
import torch

from fedmeta.optim import adam
from fedmeta.seeding import seeded
from fedmeta.vertical.leakage import attack_aucs
from fedmeta.vertical.protection import Protection
from fedmeta.vertical.split import SplitNetwork, StepRecord, train_split


def test_attacks_read_labels_off_first_order_gradients():
    # gradient of person i = (p_i - y_i) v with p = 0.1: positives long and opposite
    v = torch.tensor([1.0, -2.0, 0.5])
    labels = torch.tensor([0, 1, 0, 0, 1, 0, 0, 0])
    gradients = (0.1 - labels.float()).unsqueeze(1) * v
    assert attack_aucs([StepRecord(gradients, labels, 0)]) == {"norm_auc": 1.0, "cosine_auc": 1.0}
    # a model that predicts positive for everyone (p = 0.9): now negatives are the long ones
    flipped = (0.9 - labels.float()).unsqueeze(1) * v
    assert attack_aucs([StepRecord(flipped, labels, 0)])["norm_auc"] == 0.0


def imbalanced(n=600, seed=0):
    """Two parties' columns of a binary task with about 10% positives."""
    g = torch.Generator().manual_seed(seed)
    xs = [torch.randn(n, 4, generator=g), torch.randn(n, 4, generator=g)]
    y = (xs[0][:, 0] + xs[1][:, 0] > 1.8).long()
    return xs, y


@pytest.mark.parametrize("down, low", [(Protection(), None),
                                        (Protection("gaussian", clip=0.05, multiplier=20.0), 0.65),
                                        (Protection("laplace", clip=0.05, multiplier=20.0), 0.65)])
def test_attack_auc_high_unprotected_and_near_chance_with_strong_noise(down, low):
    xs, y = imbalanced()
    assert 0.05 < y.float().mean() < 0.15
    torch.manual_seed(0)
    network = SplitNetwork.mlp((4, 4), hidden=16, embedding=4, top_hidden=8, num_classes=2)
    *_, records = train_split(network, xs, y, epochs=3, batch_size=64, optimizer=adam(0.01),
                              generator=seeded(0), down=down, noise=seeded(1),
                              record=True)
    # the last epoch's: the norm attack needs a model that has learned the class prior (an
    # untrained one predicts p ~ 0.5 for everyone, and the norms say nothing)
    aucs = attack_aucs([r for r in records if r.epoch == 2])
    if low is None:
        assert aucs["norm_auc"] > 0.9 and aucs["cosine_auc"] > 0.9, aucs
    else:
        assert aucs["norm_auc"] < low and aucs["cosine_auc"] < low, aucs
