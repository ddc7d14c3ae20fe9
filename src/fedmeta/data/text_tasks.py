"""Next-character tasks (FedMeta, Chen et al. 2018, arXiv:1802.07876, on LEAF's Shakespeare): a
task is one role, its support the samples of the first part of its text, its query those of
the rest (the client's own `query_mask`). Labels are the vocabulary's, shared by every task
(`shared_labels`), not an episode's own 0..N-1, so a model's head scores them as it is.
"""
from __future__ import annotations

import torch

from fedmeta.data.cold_start import ColdStartSampler
from fedmeta.data.episodes import Episodes, EpisodeSampler, SharedTargetsSampler
from fedmeta.data.federated import ClientData


class TextTaskSampler(SharedTargetsSampler):
    """Tasks of `shots` support and `queries` query samples, each drawn uniformly with
    replacement from its part of a client, so a short role gives tasks of the same shapes
    (cohorts stack)."""

    def __str__(self) -> str:
        return f"tasks of {self.shots} support and {self.queries} query samples"

    def eligible(self, client: ClientData) -> bool:
        mask = client.query_mask
        return mask is not None and bool(mask.any()) and not bool(mask.all())

    def sample(self, client: ClientData, num_episodes: int, generator: torch.Generator) -> Episodes:
        """`num_episodes` tasks of the client; deterministic given the generator's state."""
        if not self.eligible(client):
            raise ValueError("a text client needs a query mask with support and query samples")
        parts = []
        for part, count in ((~client.query_mask, self.shots), (client.query_mask, self.queries)):
            where = torch.nonzero(part).flatten()
            picks = where[torch.randint(len(where), (num_episodes, count), generator=generator)]
            parts += [client.x[picks], client.y[picks]]
        return Episodes(*parts)


# what draws a learner's or evaluation's tasks
TaskSampler = EpisodeSampler | TextTaskSampler | ColdStartSampler
