"""From a validated `Config` to the objects a run needs: data, learner, server pipeline."""

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch

from fedmeta.config import Config
from fedmeta.data import (EpisodeSampler, FederatedDataset, femnist_federated,
                          omniglot_federated, synthetic_federated)
from fedmeta.learners.base import Learner
from fedmeta.learners.protonet import ProtoNet
from fedmeta.models import build_model
from fedmeta.optim import OPTIMIZERS
from fedmeta.server import Stage, chain, server_optimizer, weighted_mean

LEARNERS: dict[str, type[Learner]] = {"protonet": ProtoNet}
SYNTHETIC_TEST_CLIENTS = 100


def bundled_omniglot() -> Path:
    """The compact Omniglot (28x28, 1 bit per pixel, MIT license) shipped inside fedmeta."""
    return Path(str(resources.files("fedmeta") / "assets" / "omniglot_28_1bit.npz"))


def build_datasets(config: Config) -> tuple[FederatedDataset, FederatedDataset]:
    """(meta-training clients, held-out meta-test clients)."""
    data = config.data
    path = bundled_omniglot() if data.path == "bundled" else data.path
    if data.dataset == "omniglot":
        return omniglot_federated(path, partition=data.partition, num_clients=data.num_clients,
                                  rotations=data.rotations, seed=config.seed,
                                  download=data.download)
    if data.dataset == "femnist":
        return femnist_federated(path, test_fraction=data.test_fraction, seed=config.seed,
                                 download=data.download)
    make = lambda count, seed: synthetic_federated(  # noqa: E731
        count, alpha=data.synthetic_alpha, beta=data.synthetic_beta, seed=seed)
    return make(data.num_clients, config.seed), make(SYNTHETIC_TEST_CLIENTS, config.seed + 1)


def build_pipeline(config: Config) -> Stage:
    server = config.server
    return chain(weighted_mean(), server_optimizer(OPTIMIZERS[server.optimizer](server.lr)))


@dataclass
class Experiment:
    config: Config
    train: FederatedDataset
    test: FederatedDataset
    learner: Learner
    pipeline: Stage
    eval_sampler: EpisodeSampler


def build_experiment(config: Config) -> Experiment:
    train, test = build_datasets(config)
    torch.manual_seed(config.seed)
    model = build_model(config.model.name, tuple(train.input_shape), None, config.model.hidden)
    task, learner_config = config.task, config.learner
    learner = LEARNERS[learner_config.algorithm](
        model, EpisodeSampler(task.ways, task.shots, task.queries),
        OPTIMIZERS[learner_config.optimizer](learner_config.lr),
        local_steps=learner_config.local_steps, tasks_per_step=learner_config.tasks_per_step)
    ev = config.eval
    return Experiment(config, train, test, learner, build_pipeline(config),
                      EpisodeSampler(ev.ways, ev.shots, ev.queries))
