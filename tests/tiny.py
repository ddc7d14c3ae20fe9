"""Tiny models, episodes and clients for the learner tests."""

import torch

from fedmeta.data import ClientData, EpisodeSampler, Episodes
from fedmeta.learners.base import Learner
from fedmeta.models import MLP
from fedmeta.optim import sgd

DIM, WAYS = 4, 3


def mlp_learner(cls: type[Learner], hidden: tuple[int, ...] = (5,), ways: int | None = WAYS,
                lr: float = 0.1, dtype: torch.dtype = torch.float64, **kwargs) -> Learner:
    """`cls` on an MLP with DIM inputs (seeded, float64 by default), local SGD of `lr`."""
    torch.manual_seed(0)
    model = MLP((DIM,), hidden, ways).to(dtype)
    return cls(model, EpisodeSampler(WAYS, 2, 3), sgd(lr), **kwargs)


def float_episodes(num: int = 2, shots: int = 2, queries: int = 3, seed: int = 1) -> Episodes:
    """Random float64 WAYS-way episodes, class-major labels."""
    g = torch.Generator().manual_seed(seed)
    labels = lambda k: torch.arange(WAYS).repeat_interleave(k).expand(num, -1)  # noqa: E731
    return Episodes(torch.randn(num, WAYS * shots, DIM, generator=g, dtype=torch.float64),
                    labels(shots).clone(),
                    torch.randn(num, WAYS * queries, DIM, generator=g, dtype=torch.float64),
                    labels(queries).clone())


def feature_client(classes: int = 4, per_class: int = 12, seed: int = 2) -> ClientData:
    """Float32 features with class-dependent means, labels 0..classes-1."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(classes).repeat_interleave(per_class)
    means = 2 * torch.randn(classes, DIM, generator=g)
    return ClientData(means[y] + torch.randn(len(y), DIM, generator=g), y)
