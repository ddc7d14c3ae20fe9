"""Ditto (Li, Hu, Beirami, Smith 2021, "Ditto: Fair and Robust Federated Learning Through
Personalization"), Algorithm 1.

The global model trains as FedAvg's; each client also keeps a personal model v (its personal
state, the initial global model at first) and, each round, takes as many steps on its own loss
plus `lambda / 2 * ||v - w||^2`, w the global model it received (lambda: `proximal_mu`, as
PFLlib names it), with a fresh local optimizer, on batches of its own. The personal model is
what the client predicts with; it never leaves the client.
"""

from typing import Any

import torch
from torch import nn

from fedmeta.data import ClientData, EpisodeSampler
from fedmeta.learners.base import Update
from fedmeta.learners.fedavg import FedAvg
from fedmeta.optim import Transform
from fedmeta.params import Params, detached, tree_sub


class Ditto(FedAvg):
    hyperparameters = ("batch_size", "proximal_mu")
    keeps_state = True

    def __init__(self, model: nn.Module, sampler: EpisodeSampler, local_optimizer: Transform,
                 local_steps: int = 1, tasks_per_step: int = 1, *, batch_size: int = 32,
                 proximal_mu: float = 0.01, **sample_privacy: float | None) -> None:
        super().__init__(model, sampler, local_optimizer, local_steps, tasks_per_step,
                         batch_size=batch_size, **sample_privacy)
        self.proximal_mu = proximal_mu

    def initial_state(self) -> Params:
        """The initial global model."""
        return self.init_params()

    def personal_model(self, params: Params, state: Params) -> Params:
        return state

    def local_batches(self, client: ClientData, generator: torch.Generator) -> list[Any]:
        """FedAvg's batches for the global model's steps, then as many for the personal
        model's."""
        return self.minibatches(client, 2 * self.local_steps, generator)

    def train_local(self, params: Params, batches: list[Any], weight: float,
                    state: Params | None = None) -> Update:
        global_batches, personal_batches = batches[:len(batches) // 2], batches[len(batches) // 2:]
        local, loss = self.optimizer_steps(params, global_batches, self.local_gradient)

        def proximal(v: Params, batch: Any) -> tuple[Params, torch.Tensor]:
            grads, value = self.local_gradient(v, batch)
            return {k: g + self.proximal_mu * (v[k] - params[k]) for k, g in grads.items()}, value

        personal, _ = self.optimizer_steps(state, personal_batches, proximal)
        return Update(tree_sub(local, params), weight, loss, detached(personal))
