"""Local training only: every client trains a model of its own on its own data and never
sends anything, the reference line that says whether federation helps at all (PFLlib's
"Local"). The server's params are the common initialization, which never changes; a client's
model (its personal state) starts from it and takes the local optimizer's steps on FedAvg's
batches each round."""

from typing import Any

from fedmeta.learners.base import Update
from fedmeta.learners.fedavg import FedAvg
from fedmeta.params import Params, detached, tree_map


class Local(FedAvg):
    keeps_state = True

    def initial_state(self) -> Params:
        return self.init_params()

    def personal_model(self, params: Params, state: Params) -> Params:
        return state

    def client_model(self, params: Params) -> Params:
        """Nothing: the server sends a local-only client no model."""
        return {}

    def train_local(self, params: Params, batches: list[Any], weight: float,
                    state: Params | None = None) -> Update:
        personal, loss = self.optimizer_steps(state, batches, self.local_gradient)
        return Update(tree_map(lambda p: p.new_zeros(p.shape), params), weight, loss,
                      detached(personal))
