"""SCAFFOLD (Karimireddy, Kale, Mohri, Reddi, Stich, Suresh 2020, "SCAFFOLD: Stochastic
Controlled Averaging for Federated Learning"), Algorithm 1 with option II.

The server holds the global model x and a control variate c (its params: the model's and
`control.<name>`, sent together, so a round costs twice FedAvg's bytes, as in the paper); each
client keeps its own control variate c_i (its personal state, zero at first). A client takes
K steps of local SGD on its loss corrected by `c - c_i`,

    y <- y - lr (grad f_i(y) + c - c_i),

then sets `c_i+ = c_i - c + (x - y) / (K lr)` and sends `(y - x, c_i+ - c_i)`. The server
adds the mean of the first to x (fedmeta's sample-weighted mean, as for FedAvg) and
`(1/N) sum_S (c_i+ - c_i)` to c, so that c stays the mean of the N clients' c_i
(`server_round` rescales each control row so that the weighted mean makes that sum).

The correction assumes plain local SGD (the local optimizer must be "sgd") and the server
step `x += mean delta`, `c += ...` as above: the server optimizer must be SGD at rate 1 without
a schedule (PFLlib's default global rate), and nothing may change a client's update between it
and the mean (robust rules, compression, norm bounds, user-level DP's clip and noise); other
settings are refused. A round the server does not release (fewer than `server.min_clients`)
leaves the clients' control variates as they were, in simulation and on Flower, where a node
holds its new c_i until the server says it used the reply (`commits_state`).
"""

import copy
from typing import Any

import torch
from torch import nn

from fedmeta.data import EpisodeSampler
from fedmeta.learners.base import Update
from fedmeta.learners.fedavg import FedAvg
from fedmeta.optim import Transform, scale_updates
from fedmeta.params import Params, tree_sub
from fedmeta.server import Round

CONTROL = "control."


def model_part(params: Params) -> Params:
    """The model's params among SCAFFOLD's server params (without the control variate)."""
    return {k: v for k, v in params.items() if not k.startswith(CONTROL)}


def control_part(params: Params) -> Params:
    """The server's control variate c, by the model's param names."""
    return {k.removeprefix(CONTROL): v for k, v in params.items() if k.startswith(CONTROL)}


class Scaffold(FedAvg):
    hyperparameters = ("batch_size", "lr")
    keeps_state = True
    commits_state = True
    takes_num_clients = True
    plain_sgd = True

    def __init__(self, model: nn.Module, sampler: EpisodeSampler, local_optimizer: Transform,
                 local_steps: int = 1, tasks_per_step: int = 1, *, batch_size: int = 32,
                 lr: float, num_clients: int, **sample_privacy: float | None) -> None:
        super().__init__(model, sampler, local_optimizer, local_steps, tasks_per_step,
                         batch_size=batch_size, **sample_privacy)
        self.lr, self.num_clients = lr, num_clients

    def init_params(self) -> Params:
        model = super().init_params()
        return {**model, **{CONTROL + k: torch.zeros_like(v) for k, v in model.items()}}

    def at_local_rate(self, factor: float) -> "Scaffold":
        learner = copy.copy(self)
        learner.local_optimizer = scale_updates(self.local_optimizer, factor)
        learner.lr = factor * self.lr
        return learner

    def initial_state(self) -> Params:
        """c_i = 0."""
        return {k: torch.zeros_like(v) for k, v in super().init_params().items()}

    def personal_model(self, params: Params, state: Params) -> Params:
        return model_part(params)

    def train_local(self, params: Params, batches: list[Any], weight: float,
                    state: Params | None = None) -> Update:
        x, c = model_part(params), control_part(params)
        correction = {k: c[k] - state[k] for k in x}

        def corrected(local: Params, batch: Any) -> tuple[Params, torch.Tensor]:
            grads, loss = self.local_gradient(local, batch)
            return {k: g + correction[k] for k, g in grads.items()}, loss

        y, loss = self.optimizer_steps(x, batches, corrected)
        delta = tree_sub(y, x)
        steps_lr = len(batches) * self.lr
        new_state = {k: state[k] - c[k] - delta[k] / steps_lr for k in x}
        return Update({**delta, **{CONTROL + k: new_state[k] - state[k] for k in x}}, weight,
                      loss, new_state)

    def server_round(self, params: Params, rnd: Round) -> Round:
        """Control row i times `sum_S w / (N w_i)`, so the weighted mean of the rows is
        `(1/N) sum_S delta c_i`."""
        scale = rnd.weights.sum() / (self.num_clients * rnd.weights)
        return rnd.with_deltas({
            k: v * scale.to(v).view(-1, *[1] * (v.dim() - 1)) if k.startswith(CONTROL)
            else v for k, v in rnd.deltas.items()})
