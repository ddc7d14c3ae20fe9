"""Reptile (Nichol, Achiam, Schulman 2018, "On First-Order Meta-Learning Algorithms"),
federated.

A client trains its copy of the initialisation on its tasks one after another: for each of
`local_steps x tasks_per_step` episodes, `inner_steps` steps of its inner optimizer (rate
`inner_lr`) on the episode's support and query examples together. It returns
`delta = adapted - global`; the server's learning rate (`server.lr` with the SGD server
optimizer) is Reptile's outer step size epsilon. `learner.optimizer` and `learner.lr` are not
used: the local optimizer is the inner one, SGD or, as Nichol et al. train it, Adam
with beta1 = 0, its moments carried across the round's tasks. Meta-testing runs the same
inner optimizer, fresh, for `eval_inner_steps` steps on the support set.
"""

import torch
from torch import nn
from torch.func import grad_and_value

from fedmeta.data import ClientData, EpisodeSampler
from fedmeta.learners.maml import MAML
from fedmeta.optim import Transform, adam, sgd
from fedmeta.params import Params


def inner_transform(name: str, lr: float) -> Transform:
    """Reptile's inner optimizer `name` ("sgd" or "adam") of rate `lr`."""
    return sgd(lr) if name == "sgd" else adam(lr, b1=0.0)


class Reptile(MAML):
    hyperparameters = (*MAML.hyperparameters, "inner_optimizer")

    def __init__(self, model: nn.Module, sampler: EpisodeSampler, local_optimizer: Transform,
                 local_steps: int = 1, tasks_per_step: int = 1, inner_optimizer: str = "sgd",
                 **inner: float | int | None) -> None:
        super().__init__(model, sampler, local_optimizer, local_steps, tasks_per_step, **inner)
        self.inner_optimizer = inner_optimizer
        self.local_optimizer = inner_transform(inner_optimizer, self.inner_lr)

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

    def eval_adapt(self, params: Params, support_x: torch.Tensor,
                   support_y: torch.Tensor) -> Params:
        """All params, the adapted ones (`inner_params`) after `eval_inner_steps` steps of a
        fresh inner optimizer (the local one: `optimizer_steps`) on the support loss."""
        fast = {k: v for k, v in params.items() if self.adapted(k)}

        def support_gradient(adapted: Params, batch: tuple[torch.Tensor, torch.Tensor]
                             ) -> tuple[Params, torch.Tensor]:
            return grad_and_value(lambda a: self.loss({**params, **a}, *batch))(adapted)

        fast, _ = self.optimizer_steps(fast, [(support_x, support_y)] * self.eval_inner_steps,
                                       support_gradient)
        return {**params, **fast}

    def local_gradient(self, params: Params, batch: tuple[torch.Tensor, torch.Tensor]
                       ) -> tuple[Params, torch.Tensor]:
        return grad_and_value(self.loss)(params, *batch)
