"""FedRep (Collins, Hassani, Mokhtari, Shakkottai 2021, "Exploiting Shared Representations for
Personalized Federated Learning"), Algorithm 1: the representation (the body) is shared, each
client keeps its own head; a round first takes `head_steps` steps on the head with the body
fixed, then `local_steps` steps on the body with the new head fixed, and sends the body's
change. Each phase has a fresh local optimizer.

Sample-level DP-SGD is refused: the body's update depends on the head's `head_steps` steps on
the same examples, which the sample-level accountant (`local_steps` a round) would not count."""

from typing import Any

import torch
from torch import nn

from fedmeta.data import ClientData, EpisodeSampler
from fedmeta.learners.base import Update
from fedmeta.learners.local_layers import LocalLayers
from fedmeta.optim import Transform
from fedmeta.params import Params


class FedRep(LocalLayers):
    hyperparameters = (*LocalLayers.hyperparameters, "head_steps")
    sample_level_dp = False

    def __init__(self, model: nn.Module, sampler: EpisodeSampler, local_optimizer: Transform,
                 local_steps: int = 1, tasks_per_step: int = 1, *, head_steps: int = 10,
                 **settings: float | int | None) -> None:
        super().__init__(model, sampler, local_optimizer, local_steps, tasks_per_step,
                         **settings)
        self.head_steps = head_steps

    def local_batches(self, client: ClientData, generator: torch.Generator) -> list[Any]:
        """The head's batches, then the body's."""
        return self.minibatches(client, self.head_steps + self.local_steps, generator)

    def train_local(self, params: Params, batches: list[Any], weight: float,
                    state: Params | None = None) -> Update:
        head_batches, body_batches = batches[:self.head_steps], batches[self.head_steps:]
        head, _ = self.optimizer_steps(state, head_batches, self.part_gradient(params))
        body, loss = self.optimizer_steps(params, body_batches, self.part_gradient(head))
        return self.update(params, {**body, **head}, weight, loss)
