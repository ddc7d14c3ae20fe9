"""Federated learning of part of a model: the layers a learner names as local (`is_local`)
stay on each client as its personal state, starting from the model's initialization, and
only the others are averaged. FedPer, FedRep and FedBN differ in which layers stay and in how
a client trains them (`fedmeta.learners.fedper`, `.fedrep`, `.fedbn`)."""

from collections.abc import Callable
from typing import Any

import torch

from fedmeta.learners.base import Update
from fedmeta.learners.fedavg import FedAvg
from fedmeta.params import Params, detached, tree_sub


class LocalLayers(FedAvg):
    """The server's params are the shared layers'; a client's model is those with its own
    local layers, trained together by FedAvg's local steps unless `train_local` says
    otherwise."""

    keeps_state = True

    def is_local(self, name: str) -> bool:
        """Whether the param `name` stays on the client (the head)."""
        return name.startswith("head.")

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
