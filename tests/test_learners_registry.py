"""Every registered algorithm runs a client round (on the params the server sends a client) and
meta-test on a tiny Omniglot-like client; build picks the head each learner declares."""

import math
from types import SimpleNamespace

import pytest
import torch

from fedmeta.build import LEARNERS, bundled_omniglot, head_size
from fedmeta.config import LearnerConfig, load_config
from fedmeta.data import ClientData, EpisodeSampler, omniglot_federated
from fedmeta.errors import UserError
from fedmeta.models import build_model
from fedmeta.optim import adam
from tiny import WAYS

GLOBAL_CLASSES = 6


def omniglot_like_client() -> ClientData:
    """uint8 16x16 'characters', 8 drawings of each of GLOBAL_CLASSES classes."""
    g = torch.Generator().manual_seed(0)
    y = torch.arange(GLOBAL_CLASSES).repeat_interleave(8)
    return ClientData(torch.randint(0, 256, (len(y), 16, 16), generator=g, dtype=torch.uint8), y)


@pytest.mark.parametrize("algorithm", sorted(LEARNERS))
def test_every_algorithm_runs_a_round_and_a_meta_test(algorithm):
    cls = LEARNERS[algorithm]
    torch.manual_seed(0)
    heads = {"none": None, "ways": WAYS, "global": GLOBAL_CLASSES}
    model = build_model("conv4", (1, 16, 16), heads[cls.head], hidden=4)
    defaults = LearnerConfig(finetune_steps=3)
    learner = cls(model, EpisodeSampler(WAYS, 1, 2), adam(1e-3), local_steps=2,
                  **{key: getattr(defaults, key) for key in cls.hyperparameters},
                  **({"num_clients": 3} if cls.takes_num_clients else {}))
    server, client = learner.init_params(), omniglot_like_client()
    params = {k: v[0] for k, v in learner.client_params(server, torch.tensor([1])).items()}
    update = learner.client_update(params, client, torch.Generator().manual_seed(1))
    assert set(update.delta) == set(params)
    assert all(torch.isfinite(d).all() for d in update.delta.values())
    trained = {**update.delta, **{k: v - learner.initial_state()[k]
                                  for k, v in update.state.items()}}
    assert any(d.abs().sum() > 0 for d in trained.values())  # local-only sends zeros
    assert math.isfinite(update.loss) and update.weight == len(client)
    episodes = EpisodeSampler(WAYS, 1, 2).sample(client, 2, torch.Generator().manual_seed(2))
    accuracy = learner.accuracy(server, episodes)
    assert accuracy.shape == (2,) and ((0 <= accuracy) & (accuracy <= 1)).all()


def test_head_follows_the_learner_and_ways_heads_need_equal_eval_ways():
    train = SimpleNamespace(num_classes=GLOBAL_CLASSES)
    config = load_config(None, ["task.ways=5", "eval.ways=5", "learner.algorithm=maml"])
    assert [head_size(config, kind, train.num_classes) for kind in ("none", "ways", "global")] == \
        [None, 5, GLOBAL_CLASSES]
    mismatch = load_config(None, ["task.ways=10", "eval.ways=5", "learner.algorithm=maml"])
    assert head_size(mismatch, "none", train.num_classes) is None  # ProtoNet, FedAvg: any eval ways
    with pytest.raises(UserError, match="eval.ways must equal task.ways"):
        head_size(mismatch, "ways", train.num_classes)


@pytest.mark.parametrize("rotations", [False, True])
def test_bundled_omniglot_training_labels_fit_a_global_head(rotations):
    train, _ = omniglot_federated(bundled_omniglot(), rotations=rotations)
    top = max(int(train.client(i).y.max()) for i in range(train.num_clients))
    assert top + 1 == train.num_classes


@pytest.mark.parametrize("algorithm", sorted(LEARNERS))
def test_the_rate_a_learner_adapts_by_is_one_of_its_adaptation_settings(algorithm):
    cls = LEARNERS[algorithm]
    assert cls.adaptation_rate is None or cls.adaptation_rate in cls.adaptation
    assert set(cls.adaptation) <= set(cls.hyperparameters)
