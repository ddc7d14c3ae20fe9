"""Cold-start episodes of a user's ratings (MeLU, Lee et al., KDD 2019): the support set is
the first `shots` ratings the user gave (its evidence set: 5, 10 or 20 in MeLU), the query
set ratings it gave later. A new user is adapted on its support and scored on every later
rating (`split`); a training user's episodes draw `queries` of its later ratings, so that
every client's episodes have the same shapes and cohorts stack.

A client's examples must be in the order the user rated (`fedmeta.data.movielens`)."""
from __future__ import annotations

import torch

from fedmeta.data.episodes import Episodes, NotEnoughData, SharedTargetsSampler
from fedmeta.data.federated import ClientData


class TooFewRatings(NotEnoughData):
    def __init__(self, ratings: int, shots: int) -> None:
        ValueError.__init__(self, f"user has {ratings} ratings, needs more than the {shots} "
                                  "of its support set")


class ColdStartSampler(SharedTargetsSampler):
    """Episodes of one user: support its first `shots` ratings, query `queries` of the others
    (without replacement where it has that many, else with). `ways` is 1: a single task, the
    user's ratings (Per-FedAvg's Hessian-free variant halves the query set by it)."""

    ways = 1

    def __str__(self) -> str:
        return f"new users' later ratings after their first {self.shots}"

    def with_queries(self, queries: int) -> ColdStartSampler:
        return ColdStartSampler(self.shots, queries)

    def eligible(self, client: ClientData) -> bool:
        return len(client) > self.shots

    def split(self, client: ClientData) -> tuple[ClientData, ClientData]:
        """(support: the first `shots` ratings, query: all the later ones)."""
        if not self.eligible(client):
            raise TooFewRatings(len(client), self.shots)
        k = self.shots
        return ClientData(client.x[:k], client.y[:k]), ClientData(client.x[k:], client.y[k:])

    def sample(self, client: ClientData, num_episodes: int,
               generator: torch.Generator) -> Episodes:
        """`num_episodes` episodes, the same support in each; deterministic given the
        generator's state."""
        support, later = self.split(client)
        e, q, n = num_episodes, self.queries, len(later)
        if n >= q:
            picks = torch.rand(e, n, generator=generator).argsort(1)[:, :q]
        else:
            picks = torch.randint(n, (e, q), generator=generator)
        return Episodes(support.x.expand(e, *support.x.shape), support.y.expand(e, self.shots),
                        later.x[picks], later.y[picks])
