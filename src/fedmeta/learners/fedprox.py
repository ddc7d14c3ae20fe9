"""FedProx (Li, Sahu, Zaheer, Sanjabi, Talwalkar, Smith 2020, "Federated Optimization in
Heterogeneous Networks"): FedAvg whose clients minimize their loss plus the proximal term
`mu / 2 * ||w - w_global||^2`, which keeps a heterogeneous client's local model near the
global one (mu = 0 is FedAvg). The term is a transform around the local optimizer
(`fedmeta.optim.proximal`), so the local loop, looped or vmapped, is FedAvg's."""

import copy

from torch import nn

from fedmeta.data import EpisodeSampler
from fedmeta.learners.fedavg import FedAvg
from fedmeta.optim import Transform, proximal, scale_updates


class FedProx(FedAvg):
    hyperparameters = ("batch_size", "proximal_mu")

    def __init__(self, model: nn.Module, sampler: EpisodeSampler, local_optimizer: Transform,
                 local_steps: int = 1, tasks_per_step: int = 1, *, batch_size: int = 32,
                 proximal_mu: float = 0.01, **sample_privacy: float | None) -> None:
        super().__init__(model, sampler, proximal(proximal_mu, local_optimizer), local_steps,
                         tasks_per_step, batch_size=batch_size, **sample_privacy)
        self.proximal_mu, self.data_optimizer = proximal_mu, local_optimizer

    def at_local_rate(self, factor: float) -> "FedProx":
        """At `factor` times the local rate, the proximal term's step scaled with the data
        term's (scaling the whole transform would leave its record of w - w_global behind)."""
        learner = copy.copy(self)
        learner.local_optimizer = proximal(self.proximal_mu,
                                           scale_updates(self.data_optimizer, factor))
        return learner
