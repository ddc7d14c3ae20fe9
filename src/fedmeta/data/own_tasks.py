"""Tasks of a client's own examples with the dataset's own labels, shared by every task
(`shared_labels`), not an episode's own 0..N-1, so a model's head scores them as it is:
FedMeta's text tasks (Chen et al. 2018, arXiv:1802.07876, on LEAF's Shakespeare: a role's
support from the first part of its text, its query from the rest), LEAF's per-user split of
FEMNIST writers, and Per-FedAvg's two minibatches of a client's data (Fallah et al. 2020) on
label-skewed clients (`task.labels = "global"`).
"""
from __future__ import annotations

import torch

from fedmeta.data.cold_start import ColdStartSampler
from fedmeta.data.episodes import (Episodes, EpisodeSampler, NotEnoughData,
                                   SharedTargetsSampler)
from fedmeta.data.federated import ClientData, as_float_input


class TooFewExamples(NotEnoughData):
    def __init__(self, examples: int, sampler: "OwnExamplesSampler") -> None:
        ValueError.__init__(self, f"client has {examples} examples (or no support or query "
                                  f"part of its own split), too few for {sampler}")


class OwnExamplesSampler(SharedTargetsSampler):
    """Tasks of `shots` support and `queries` query examples of one client. A client with its
    own split (`query_mask`: a role's text, a LEAF writer's) gives each part's examples drawn
    uniformly with replacement, so a short client gives tasks of the same shapes (cohorts
    stack); a client without one gives `shots + queries` distinct examples at random a task,
    the first `shots` its support."""

    def __str__(self) -> str:
        return f"tasks of {self.shots} support and {self.queries} query samples"

    def eligible(self, client: ClientData) -> bool:
        mask = client.query_mask
        if mask is None:
            return len(client) >= self.shots + self.queries
        return bool(mask.any()) and not bool(mask.all())

    def sample(self, client: ClientData, num_episodes: int, generator: torch.Generator) -> Episodes:
        """`num_episodes` tasks of the client; deterministic given the generator's state."""
        if not self.eligible(client):
            raise TooFewExamples(len(client), self)
        if client.query_mask is None:
            draws = torch.rand(num_episodes, len(client), generator=generator)
            picks = draws.argsort(dim=1)[:, :self.shots + self.queries]
            support, query = picks[:, :self.shots], picks[:, self.shots:]
            return Episodes(as_float_input(client.x[support]), client.y[support],
                            as_float_input(client.x[query]), client.y[query])
        parts = []
        for part, count in ((~client.query_mask, self.shots), (client.query_mask, self.queries)):
            where = torch.nonzero(part).flatten()
            picks = where[torch.randint(len(where), (num_episodes, count), generator=generator)]
            parts += [as_float_input(client.x[picks]), client.y[picks]]
        return Episodes(*parts)


# what draws a learner's or evaluation's tasks
TaskSampler = EpisodeSampler | OwnExamplesSampler | ColdStartSampler
