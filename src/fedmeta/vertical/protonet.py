"""Vertical federated ProtoNets: few-shot learning where each party holds a slice of every
example (here, vertical strips of an image: Omniglot's left and right halves).

Each party embeds its slice of an episode's examples with its own bottom model; the label party
(party 0) concatenates the slices' embeddings, forms each class's prototype from the few
labelled support examples and scores the queries by distance (Snell, Swersky, Zemel 2017,
"Prototypical Networks for Few-shot Learning"). The parties meta-train their bottoms on
episodes, the other parties only ever seeing the embeddings' gradients (`split.exchange`);
meta-test episodes come from classes never trained on.

The label party sends the other parties the episode's examples in a random order, so the order
does not give away which examples share a class (the gradients still may: `leakage`). The
gradient sent down is that of the episode's mean query loss (a support example's row mixes
into its class's prototype, so there is no per-example loss to take it of): a gradient clip
norm here is in those units, not the tabular runs' per-example ones.
"""

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from fedmeta.data import ClientData, Episodes, EpisodeSampler
from fedmeta.learners.protonet import prototype_logits, prototypes
from fedmeta.optim import Transform
from fedmeta.params import Params
from fedmeta.vertical.protection import Protection
from fedmeta.vertical.split import (Traffic, crossing_embedding, embedding, exchange,
                                    initial_params, optimizer_step)

Slicer = Callable[[torch.Tensor], list[torch.Tensor]]  # examples -> each party's slice


def width_slices(parties: int) -> Slicer:
    """Images [..., H, W] cut into `parties` vertical strips, party 0's the leftmost."""
    return lambda x: list(torch.tensor_split(x, parties, dim=-1))


def episode_rows(episodes: Episodes, e: int, generator: torch.Generator
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Episode `e`'s support and query examples as one shuffled set of rows: x [S+Q, ...],
    labels [S+Q] and which rows are support [S+Q] (the label party's to know)."""
    x = torch.cat([episodes.support_x[e], episodes.query_x[e]])
    y = torch.cat([episodes.support_y[e], episodes.query_y[e]])
    support = torch.arange(len(y)) < episodes.support_y.shape[1]
    order = torch.randperm(len(y), generator=generator)
    return x[order], y[order], support[order]


def episode_loss(embeddings: Sequence[torch.Tensor], y: torch.Tensor, support: torch.Tensor,
                 ways: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The label party's mean query cross-entropy and query accuracy, from the parties'
    embeddings [S+Q, E_p] of an episode's rows."""
    z = torch.cat(list(embeddings), 1)
    logits = prototype_logits(z[~support], prototypes(z[support], y[support], ways))
    accuracy = (logits.argmax(1) == y[~support]).float().mean()
    return F.cross_entropy(logits, y[~support]), accuracy


def meta_train(bottoms: Sequence[nn.Module], slicer: Slicer, pool: ClientData,
               sampler: EpisodeSampler, steps: int, optimizer: Transform,
               generator: torch.Generator, up: Protection = Protection(),
               down: Protection = Protection(), noise: torch.Generator | None = None,
               traffic: Traffic | None = None) -> list[Params]:
    """The parties' bottom params after `steps` episodes of `pool`, one a step (drawn, and
    shuffled, by the label party from `generator`); protection draws from `noise`, the
    parties' private randomness."""
    params = [initial_params(b) for b in bottoms]
    states = [optimizer.init(p) for p in params]
    for _ in range(steps):
        x, y, support = episode_rows(sampler.sample(pool, 1, generator), 0, generator)
        head = lambda _, hs: episode_loss(hs, y, support, sampler.ways)[0]  # noqa: E731
        grads, *_ = exchange(bottoms, params, slicer(x), head, {}, up, down, noise, traffic)
        optimizer_step(optimizer, params, grads, states)
    return params


def meta_test(bottoms: Sequence[nn.Module], params: Sequence[Params], slicer: Slicer,
              episodes: Episodes, generator: torch.Generator, up: Protection = Protection(),
              noise: torch.Generator | None = None) -> torch.Tensor:
    """Query accuracy of each episode [E] (rows shuffled from `generator`); the other
    parties' embeddings cross protected, the noise drawn from `noise`."""
    accuracies = []
    with torch.no_grad():
        for e in range(episodes.num_episodes):
            x, y, support = episode_rows(episodes, e, generator)
            strips = slicer(x)
            received = [embedding(bottoms[0], params[0], strips[0], Protection()), *(
                crossing_embedding(m, p, s, up, noise)
                for m, p, s in zip(bottoms[1:], params[1:], strips[1:]))]
            accuracies.append(episode_loss(received, y, support, episodes.ways)[1])
    return torch.stack(accuracies)
