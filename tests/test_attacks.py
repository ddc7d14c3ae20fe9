"""Simulated attacks: who is malicious, what each attack sends, and a run under attack where
the plain mean breaks and the median holds."""

import pytest
import torch

from fedmeta.attacks import Attack, FlippedQueries, flipped_labels, label_flipped
from fedmeta.build import build_experiment
from fedmeta.config import load_config
from fedmeta.data import ClientData
from fedmeta.engine.simulation import Simulation
from fedmeta.errors import UserError
from fedmeta.learners.protonet import ProtoNet
from tiny import feature_client, mlp_learner

SYNTHETIC = ["data.dataset=synthetic", "data.num_clients=30", "model.name=mlp",
             "model.hidden=16", "learner.algorithm=fedavg", "learner.optimizer=sgd",
             "learner.lr=0.1", "learner.local_steps=5", "server.clients_per_round=10",
             "eval.every=0", "eval.final_episodes=20", "seed=3"]


def attack(kind: str, fraction: float = 0.2, num_clients: int = 30, **extra) -> Attack:
    config = load_config(None, SYNTHETIC + [f"attack.kind={kind}", f"attack.fraction={fraction}"]
                         + [f"attack.{k}={v}" for k, v in extra.items()])
    return Attack.from_config(config, num_clients)


def test_a_fixed_fraction_of_the_federation_is_malicious_by_seed():
    first, again = attack("sign-flip", 0.2, 1000), attack("sign-flip", 0.2, 1000)
    assert int(first.malicious.sum()) == 200 and torch.equal(first.malicious, again.malicious)
    assert first.boost == 10.0  # server.clients_per_round


def test_sign_flip_and_scaling_boost_only_malicious_rows():
    deltas = {"w": torch.ones(4, 3)}
    malicious = torch.tensor([False, True, False, True])
    flipped = attack("sign-flip", boost=3.0).corrupt(deltas, malicious, 1)["w"]
    assert flipped[:, 0].tolist() == [1.0, -3.0, 1.0, -3.0]
    scaled = attack("scaling").corrupt(deltas, malicious, 1)["w"]
    assert scaled[:, 0].tolist() == [1.0, 10.0, 1.0, 10.0]


def test_gaussian_attack_sends_noise_of_its_std():
    deltas = {"w": torch.zeros(2, 20000)}
    noisy = attack("gaussian", noise_std=2.0).corrupt(deltas, torch.tensor([True, False]), 4)
    assert float(noisy["w"][0].std()) == pytest.approx(2.0, rel=0.03)
    assert float(noisy["w"][1].abs().max()) == 0.0


def test_label_flip_flips_global_labels_and_episode_queries():
    client = ClientData(torch.zeros(4, 2), torch.tensor([0, 1, 2, 9]))
    assert flipped_labels(client, 10).y.tolist() == [9, 8, 7, 0]
    learner = mlp_learner(ProtoNet)
    poisoned = label_flipped(learner)
    assert isinstance(poisoned.sampler, FlippedQueries) and poisoned.model is learner.model
    honest = learner.sampler.sample(feature_client(), 2, torch.Generator().manual_seed(0))
    flipped = poisoned.sampler.sample(feature_client(), 2, torch.Generator().manual_seed(0))
    assert torch.equal(flipped.support_y, honest.support_y)
    assert torch.equal(flipped.query_y, learner.sampler.ways - 1 - honest.query_y)
    assert torch.equal(flipped.query_x, honest.query_x)


def test_attack_kind_and_fraction_go_together():
    for extra in (["attack.kind=gaussian"], ["attack.fraction=0.1"]):
        with pytest.raises(UserError, match="go together"):
            load_config(None, SYNTHETIC + extra)


def final_params(extra: list[str], rounds: int = 4):
    config = load_config(None, SYNTHETIC + [f"server.rounds={rounds}"] + extra)
    simulation = Simulation(build_experiment(config))
    metrics = []
    params = simulation.run([lambda r, p, s, m: metrics.append(m)])
    return params, metrics


def distance(a, b) -> float:
    return float(sum((a[k] - b[k]).pow(2).sum() for k in a).sqrt())


def test_under_a_gaussian_attack_the_mean_breaks_and_the_median_holds():
    clean, _ = final_params([])
    attacked = ["attack.kind=gaussian", "attack.fraction=0.2", "attack.noise_std=10.0"]
    broken, metrics = final_params(attacked)
    robust, _ = final_params(attacked + ["aggregation.rule=median"])
    assert sum(m["malicious"] for m in metrics) > 0
    assert distance(robust, clean) < 0.1 * distance(broken, clean)


def test_label_flipping_clients_train_away_from_the_honest_update():
    honest, _ = final_params([], rounds=1)
    flipped, metrics = final_params(["attack.kind=label-flip", "attack.fraction=0.5"], rounds=1)
    assert metrics[0]["malicious"] > 0 and distance(honest, flipped) > 0
