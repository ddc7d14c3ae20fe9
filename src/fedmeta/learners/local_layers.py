"""Federated learning of part of a model: the layers a learner names as local (`is_local`)
stay on each client as its personal state, starting from the model's initialization, and
only the others are averaged. FedPer, FedRep and FedBN differ in which layers stay and in how
a client trains them (`fedmeta.learners.fedper`, `.fedrep`, `.fedbn`).

The local layers are the head unless the model declares its own `personal` params (a
matrix factorization's user side, `fedmeta.models.mf`: FedRep of it is federated
collaborative filtering, Ammad-ud-din et al. 2019, the user vector fitted with the items
fixed, then the items with the user fixed). `personal_l2` puts a ridge on them. On ratings
a new user has no personal state: it fits its local layers on its support set, the shared
ones frozen, by ridge least squares (`adapt`)."""

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.func import jacrev

from fedmeta.data import EpisodeSampler
from fedmeta.learners.base import Update
from fedmeta.learners.fedavg import FedAvg
from fedmeta.optim import Transform
from fedmeta.params import Params, detached, flatten_rows, tree_sub, unflatten


class LocalLayers(FedAvg):
    """The server's params are the shared layers'; a client's model is those with its own
    local layers, trained together by FedAvg's local steps unless `train_local` says
    otherwise."""

    hyperparameters = ("batch_size", "personal_l2")
    keeps_state = True
    fits_new_state = True

    def __init__(self, model: nn.Module, sampler: EpisodeSampler, local_optimizer: Transform,
                 local_steps: int = 1, tasks_per_step: int = 1, *, personal_l2: float = 0.0,
                 **settings: float | int | None) -> None:
        super().__init__(model, sampler, local_optimizer, local_steps, tasks_per_step,
                         **settings)
        self.personal_l2 = personal_l2

    def is_local(self, name: str) -> bool:
        """Whether the param `name` stays on the client: the model's `personal` params, else
        the head."""
        return name.startswith(getattr(self.model, "personal", ("head.",)))

    def local_gradient(self, params: Params, batch: Any) -> tuple[Params, torch.Tensor]:
        """FedAvg's, plus the ridge's gradient `personal_l2 * v` on each local param v."""
        grads, loss = super().local_gradient(params, batch)
        return {k: g + self.personal_l2 * params[k] if self.is_local(k) else g
                for k, g in grads.items()}, loss

    def adapt(self, params: Params, support_x: torch.Tensor, support_y: torch.Tensor) -> Any:
        """On ratings, a new user's model: its local layers fitted on its K support ratings,
        the shared ones frozen, to the minimum of their mean squared error plus the ridge.
        Solved as a linear least-squares problem in the local params theta [P] (exact where
        the model is affine in them: a head, MF's user side): with J [K, P] the Jacobian of
        the support's predictions at the initialization theta0, targets r = y - f(theta0) +
        J theta0, theta minimizes ||J theta - r||^2 / K + personal_l2 / 2 ||theta||^2 (the
        least-norm minimum if personal_l2 is 0)."""
        if not self.rates:
            return super().adapt(params, support_x, support_y)
        start = self.initial_state()

        def predict(own: Params) -> torch.Tensor:
            return self.forward({**params, **own}, support_x)

        jacobian = jacrev(predict)(start)
        j = flatten_rows(jacobian)
        k, p = j.shape
        theta0 = torch.cat([v.flatten() for v in start.values()])
        targets = torch.cat([support_y - predict(start) + j @ theta0, theta0.new_zeros(p)])
        ridge = (k * self.personal_l2 / 2) ** 0.5 * torch.eye(p, dtype=j.dtype, device=j.device)
        theta = torch.linalg.pinv(torch.cat([j, ridge])) @ targets
        return self.personal_model(params, unflatten(theta, jacobian))

    def init_params(self) -> Params:
        return {k: v for k, v in super().init_params().items() if not self.is_local(k)}

    def initial_state(self) -> Params:
        """The local layers as the model initializes them."""
        return {k: v for k, v in super().init_params().items() if self.is_local(k)}

    def personal_model(self, params: Params, state: Params) -> Params:
        return {**params, **state}

    def train_local(self, params: Params, batches: list[Any], weight: float,
                    state: Params | None = None) -> Update:
        model, loss = self.optimizer_steps(self.personal_model(params, state), batches,
                                           self.local_gradient)
        return self.update(params, model, weight, loss)

    def part_gradient(self, fixed: Params) -> Callable[[Params, Any], tuple[Params, torch.Tensor]]:
        """The local gradient in part of the model's params, the rest `fixed`."""

        def gradient(part: Params, batch: Any) -> tuple[Params, torch.Tensor]:
            grads, loss = self.local_gradient({**fixed, **part}, batch)
            return {k: grads[k] for k in part}, loss

        return gradient

    def update(self, params: Params, model: Params, weight: float, loss: float) -> Update:
        """What a client whose round ended at `model` sends and keeps."""
        shared = {k: model[k] for k in params}
        return Update(tree_sub(shared, params), weight, loss,
                      detached({k: v for k, v in model.items() if self.is_local(k)}))
