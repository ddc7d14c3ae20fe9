"""Reptile (Nichol, Achiam, Schulman 2018, "On First-Order Meta-Learning Algorithms"),
federated.

A client trains its copy of the initialisation on its tasks one after another: for each of
`local_steps x tasks_per_step` episodes, `inner_steps` SGD steps of `inner_lr` on the episode's
support and query examples together. It returns `delta = adapted - global`; the server's
learning rate (`server.lr` with the SGD server optimizer) is Reptile's outer step size epsilon.
`learner.optimizer` and `learner.lr` are not used. Meta-testing fine-tunes on the support set
as MAML does.
"""

import torch

from fedmeta.data import ClientData
from fedmeta.learners.base import Update
from fedmeta.learners.inner import sgd_steps
from fedmeta.learners.maml import MAML
from fedmeta.params import Params, tree_sub


class Reptile(MAML):
    def client_update(self, params: Params, client: ClientData,
                      generator: torch.Generator) -> Update:
        local, losses = params, []
        for _ in range(self.local_steps):
            episodes = self.sampler.sample(client, self.tasks_per_step, generator)
            for e in range(episodes.num_episodes):
                x = torch.cat([episodes.support_x[e], episodes.query_x[e]])
                y = torch.cat([episodes.support_y[e], episodes.query_y[e]])
                local, loss = sgd_steps(lambda p: self.loss(p, x, y), local,  # noqa: B023
                                        self.inner_lr, self.inner_steps, first_order=True)
                losses.append(loss.item())
        return Update(tree_sub(local, params), float(len(client)), sum(losses) / len(losses))
