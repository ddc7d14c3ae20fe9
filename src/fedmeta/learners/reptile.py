"""Reptile (Nichol, Achiam, Schulman 2018, "On First-Order Meta-Learning Algorithms"),
federated.

A client trains its copy of the initialisation on its tasks one after another: for each of
`local_steps x tasks_per_step` episodes, `inner_steps` SGD steps of `inner_lr` on the episode's
support and query examples together. It returns `delta = adapted - global`; the server's
learning rate (`server.lr` with the SGD server optimizer) is Reptile's outer step size epsilon.
`learner.optimizer` and `learner.lr` are not used: the local optimizer is SGD of `inner_lr`.
Meta-testing fine-tunes on the support set as MAML does.
"""

import torch
from torch import nn
from torch.func import grad_and_value

from fedmeta.data import ClientData, EpisodeSampler
from fedmeta.learners.maml import MAML
from fedmeta.optim import Transform, sgd
from fedmeta.params import Params


class Reptile(MAML):
    def __init__(self, model: nn.Module, sampler: EpisodeSampler, local_optimizer: Transform,
                 local_steps: int = 1, tasks_per_step: int = 1, **inner: float | int | None) -> None:
        super().__init__(model, sampler, local_optimizer, local_steps, tasks_per_step, **inner)
        self.local_optimizer = sgd(self.inner_lr)

    def local_batches(self, client: ClientData,
                      generator: torch.Generator) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Each episode's support and query examples together, once per inner step."""
        batches = []
        for _ in range(self.local_steps):
            episodes = self.sampler.sample(client, self.tasks_per_step, generator)
            x = torch.cat([episodes.support_x, episodes.query_x], dim=1)
            y = torch.cat([episodes.support_y, episodes.query_y], dim=1)
            batches += [(x[e], y[e]) for e in range(len(episodes)) for _ in range(self.inner_steps)]
        return batches

    def local_gradient(self, params: Params, batch: tuple[torch.Tensor, torch.Tensor]
                       ) -> tuple[Params, torch.Tensor]:
        return grad_and_value(self.loss)(params, *batch)
