"""The client-side contract every federated (meta-)learning algorithm implements.

A learner is a set of pure functions of params (`dict[str, Tensor]`), so they can be
differentiated through with `torch.func.grad` and batched with `torch.func.vmap`:

- `adapt(params, support_x, support_y) -> task state` (fast weights, prototypes, ...),
- `query_logits(params, state, query_x) -> logits`,
- `meta_loss(params, episodes) -> loss` (mean query loss after adaptation),
- `client_update(params, client, generator) -> Update` (a client's local round): the local
  optimizer stepping on `local_gradient(params, batch)` over the batches of `local_batches`.

A client's round is data first (`local_batches`, drawn from its own generator, no params
involved), compute second, so `fedmeta.engine.cohort` can run the same steps for one client
at a time or, stacking every client's batches, for a whole cohort under `torch.func.vmap`.
Every batch of a learner has the same shapes whatever the client, so cohorts stack.

The server's params and a client's are the same thing for every learner but a personalizing
one (`personalized`: pFedHN, `fedmeta.learners.hypernet`), which overrides three hooks: `client_params` (what
each client is sent), `client_model` (their shapes: bytes counted, arrays a Flower node reads)
and `server_round` (the clients' deltas as deltas of the server's params).

A learner that `keeps_state` gives each client a personal state (Ditto's personal model, the
local heads of FedPer and FedRep, FedBN's norms, SCAFFOLD's control variate): `initial_state`
before its first round, passed to and returned by `train_local` (`Update.state`), never sent;
`personal_model` is the model the client predicts with. The simulation keeps every client's
(`fedmeta.engine.client_state`); on Flower each node keeps its own (`fedmeta.flower.node`).
One that `fits_new_state` fits a new user's on its support ratings when it `adapt`s (the
user side of a matrix factorization, `fedmeta.learners.local_layers`).

On a federation whose held-out data are the training clients' own splits (PFLlib's
personalized-FL protocol), `personal_correct` scores a client's held-out examples: adapted to
its own training examples (episodic learners) or by its personal model (those with a global
head).

Class attributes tell `fedmeta.build` what a learner needs: `head` is the model's linear
classifier ("none": an embedding only, "ways": one output per episode class, "global": one
output per global class of the training data) and `hyperparameters` names the `LearnerConfig`
keys passed to the constructor beyond the common ones; a `personalized` learner needs each
client's update on the server (`server_round`); one that `takes_num_clients` gets the number
of training clients (pFedHN's embeddings, SCAFFOLD's control update); `sample_level_dp`
says its local loss is a mean over examples, so DP-SGD's per-example clipping bounds an
example's influence; `global_label_tasks` that it learns tasks whose labels are the
dataset's, shared by every task (next-character prediction, `task.labels = "global"`), as
well as episodes of their own classes;
`regression` that it also trains a model whose outputs are values scored by squared error (a
rating model, `fedmeta.models.melu`) rather than logits.
"""

import copy
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad_and_value

from fedmeta.data import ClientData, Episodes, EpisodeSampler, as_float_input
from fedmeta.device import HOST, to_device
from fedmeta.errors import UserError
from fedmeta.optim import Transform, apply_updates, scale_updates
from fedmeta.params import Params, broadcast, detached, tree_sub
from fedmeta.server.chain import Round


@dataclass(frozen=True)
class Update:
    """What a client sends back: its params delta (local - global), its weight, its loss."""

    delta: Params
    weight: float
    loss: float
    state: Params = field(default_factory=dict)  # the client's personal state after the round


class Learner(ABC):
    """Meta-learns from episodes of a client's own classes, with `local_steps` optimizer steps
    of `tasks_per_step` episodes each per round."""

    head: ClassVar[Literal["none", "ways", "global"]] = "none"
    hyperparameters: ClassVar[tuple[str, ...]] = ()
    # of those, the ones a new client's adaptation reads and training does not need to
    # have used (fedmeta.adaptation chooses them on the meta-validation clients)
    adaptation: ClassVar[tuple[str, ...]] = ()
    adaptation_rate: ClassVar[str | None] = None  # of those, the rate it adapts by, if fixed
    personalized: ClassVar[bool] = False  # a model per client: sends each client its own
    sample_level_dp: ClassVar[bool] = False  # takes sample_clip_norm, sample_noise_multiplier
    keeps_state: ClassVar[bool] = False  # each client keeps a personal state across rounds
    # a client's new state counts only once the server has used its update (SCAFFOLD's c_i,
    # whose mean the server's c must stay): a deployed node holds it until told so
    commits_state: ClassVar[bool] = False
    fits_new_state: ClassVar[bool] = False  # on ratings, a new user fits its own (`adapt`)
    takes_num_clients: ClassVar[bool] = False  # takes num_clients, the training clients' count
    plain_sgd: ClassVar[bool] = False  # needs plain SGD on the clients and x += mean on the server
    # learns tasks whose labels are the dataset's, for all (fedmeta.data.own_tasks)
    global_label_tasks: ClassVar[bool] = True
    regression: ClassVar[bool] = False  # also trains rating models (`criterion`)

    def __init__(self, model: nn.Module, sampler: EpisodeSampler, local_optimizer: Transform,
                 local_steps: int = 1, tasks_per_step: int = 1) -> None:
        self.model = model
        self.sampler = sampler
        self.local_optimizer = local_optimizer
        self.local_steps = local_steps
        self.tasks_per_step = tasks_per_step

    def init_params(self) -> Params:
        return detached(dict(self.model.named_parameters()))

    def to(self, device: torch.device) -> "Learner":
        """This learner with its model (every module it computes with) on `device`."""
        self.model.to(device)
        return self

    @property
    def device(self) -> torch.device:
        """Where the learner computes: its model's device (`run.device`; the host for a
        model without parameters)."""
        first = next(self.model.parameters(), None)
        return HOST if first is None else first.device

    def on_device(self, data: Any) -> Any:
        """`data` (host tensors: a batch, episodes) on the learner's device."""
        return to_device(data, self.device)

    def at_local_rate(self, factor: float) -> "Learner":
        """This learner (sharing its model) training at `factor` times its local rate: a
        round's rate under a schedule."""
        learner = copy.copy(self)
        learner.local_optimizer = scale_updates(self.local_optimizer, factor)
        return learner

    def forward(self, params: Params, x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.model, params, (x,))

    @property
    def rates(self) -> bool:
        """Whether the model predicts values (ratings: a model with `regression = True`)
        rather than logits."""
        return getattr(self.model, "regression", False)

    def criterion(self, outputs: torch.Tensor, targets: torch.Tensor,
                  reduction: str = "mean") -> torch.Tensor:
        """The task's loss: squared error of predicted ratings (`rates`), else cross-entropy
        of logits."""
        if self.rates:
            return F.mse_loss(outputs, targets, reduction=reduction)
        return F.cross_entropy(outputs, targets, reduction=reduction)

    def loss(self, params: Params, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The `criterion` of the model's own outputs (models with a head)."""
        return self.criterion(self.forward(params, x), y)

    def features(self, params: Params, x: torch.Tensor) -> torch.Tensor:
        """The model's penultimate features (its `features` block, flattened), without the head."""
        body = {k.removeprefix("features."): v for k, v in params.items()
                if k.startswith("features.")}
        return functional_call(self.model.features, body, (x,)).flatten(1)

    @abstractmethod
    def adapt(self, params: Params, support_x: torch.Tensor, support_y: torch.Tensor) -> Any:
        """Task state after seeing a task's support set."""

    def eval_adapt(self, params: Params, support_x: torch.Tensor,
                   support_y: torch.Tensor) -> Any:
        """Task state used at meta-test time; the training-time `adapt` unless overridden."""
        return self.adapt(params, support_x, support_y)

    @abstractmethod
    def query_logits(self, params: Params, state: Any, query_x: torch.Tensor) -> torch.Tensor:
        """Logits of the query examples given the adapted task state."""

    def task_loss(self, params: Params, support_x: torch.Tensor, support_y: torch.Tensor,
                  query_x: torch.Tensor, query_y: torch.Tensor) -> torch.Tensor:
        state = self.adapt(params, support_x, support_y)
        return self.criterion(self.query_logits(params, state, query_x), query_y)

    def meta_loss(self, params: Params, episodes: Episodes) -> torch.Tensor:
        """Mean query loss over a batch of episodes."""
        losses = [self.task_loss(params, episodes.support_x[e], episodes.support_y[e],
                                 episodes.query_x[e], episodes.query_y[e])
                  for e in range(episodes.num_episodes)]
        return torch.stack(losses).mean()

    def local_batch(self, client: ClientData, generator: torch.Generator) -> Any:
        """The data of one local step: `tasks_per_step` of the client's episodes."""
        return self.sampler.sample(client, self.tasks_per_step, generator)

    def local_batches(self, client: ClientData, generator: torch.Generator) -> list[Any]:
        """The data of every local step of a round, in order: one `local_batch` per step."""
        return [self.local_batch(client, generator) for _ in range(self.local_steps)]

    def local_gradient(self, params: Params, batch: Any) -> tuple[Params, torch.Tensor]:
        """(gradient of the local objective, its value) on one local batch: the meta-loss."""
        return grad_and_value(self.meta_loss)(params, batch)

    def client_update(self, params: Params, client: ClientData, generator: torch.Generator,
                      state: Params | None = None) -> Update:
        """Local meta-training on the client's own episodes (FedMeta: Chen et al. 2018), from
        its personal `state` (None: its `initial_state`)."""
        return self.train_local(params, self.on_device(self.local_batches(client, generator)),
                                float(len(client)),
                                self.initial_state() if state is None else state)

    def initial_state(self) -> Params:
        """A client's personal state before its first round (none unless `keeps_state`), the
        same for every client whenever it first takes part."""
        return {}

    def personal_model(self, params: Params, state: Params) -> Params:
        """The model a client of personal `state` predicts with: the global one by default."""
        return params

    def train_local(self, params: Params, batches: list[Any], weight: float,
                    state: Params | None = None) -> Update:
        """The local optimizer's steps on `batches` (from `local_batches`), one per batch;
        `state`: the client's personal state (a learner that `keeps_state` uses it)."""
        local, loss = self.optimizer_steps(params, batches, self.local_gradient)
        return Update(tree_sub(local, params), weight, loss)

    def optimizer_steps(self, params: Params, batches: list[Any],
                        gradient: Callable[[Params, Any], tuple[Params, torch.Tensor]]
                        ) -> tuple[Params, float]:
        """A fresh local optimizer's steps from `params` on `gradient(params, batch)`, one per
        batch: (the params after, the mean loss)."""
        state, losses = self.local_optimizer.init(params), []
        for batch in batches:
            grads, loss = gradient(params, batch)
            steps, state = self.local_optimizer.update(grads, state)
            params = apply_updates(params, steps)
            losses.append(loss.item())
        return params, sum(losses) / len(losses)

    def client_params(self, params: Params, clients: torch.Tensor) -> Params:
        """What the server sends each of `clients` (int64 [C]), stacked [C, ...]: the global
        params to all (views, no copies) unless the learner personalizes them."""
        return broadcast(params, len(clients))

    def client_model(self, params: Params) -> Params:
        """One client's params as the server sends them (their names, shapes and dtypes: the
        bytes counted, the arrays a Flower node reads): the global params unless the learner
        personalizes them."""
        return params

    def server_round(self, params: Params, rnd: Round) -> Round:
        """The clients' deltas of what they were sent, as deltas of the server's `params`:
        the same unless the learner personalizes them."""
        return rnd

    def episode_accuracy(self, params: Params, support_x: torch.Tensor,
                         support_y: torch.Tensor, query_x: torch.Tensor,
                         query_y: torch.Tensor) -> torch.Tensor:
        """Query accuracy of one episode after adapting to its support set."""
        state = self.eval_adapt(params, support_x, support_y)
        with torch.no_grad():
            logits = self.query_logits(params, state, query_x)
        return (logits.argmax(-1) == query_y).float().mean()

    def personal_correct(self, params: Params, state: Params, support: ClientData,
                         query: ClientData, shots: int,
                         generator: torch.Generator) -> torch.Tensor:
        """Which of a client's held-out examples `query` (global labels) it gets right, bool
        [Q]: adapted, as at meta-test, to up to `shots` of its own examples `support` of each
        of their classes. Relabelled 0..c-1, a query class missing there is never right, and a
        head with fewer outputs than the client has classes is a UserError; where the
        learner's tasks keep the dataset's labels (`shared_labels`), the head's argmax over
        all classes is the prediction."""
        shot_x, shot_y, classes = own_shots(support, shots, generator)
        shared = self.sampler.shared_labels  # a head over the dataset's classes
        if shared:
            shot_y = classes[shot_y]
        else:
            self.check_own_classes(len(classes))
        state = self.eval_adapt(params, *self.on_device((shot_x, shot_y)))
        with torch.no_grad():
            logits = self.query_logits(params, state, self.on_device(as_float_input(query.x)))
        if shared:
            return logits.argmax(-1).cpu() == query.y
        return classes[logits[:, :len(classes)].argmax(-1).cpu()] == query.y

    def check_own_classes(self, classes: int) -> None:
        """UserError if a client of `classes` classes cannot be scored on its own splits: a
        meta-learned head (`head = "ways"`) with fewer outputs."""
        if self.head == "ways" and classes > self.model.head.out_features:
            raise UserError(f"a client holds {classes} classes, more than the "
                            f"{self.model.head.out_features}-way head {type(self).__name__} "
                            "meta-learns (task.ways)")

    def accuracy(self, params: Params, episodes: Episodes) -> torch.Tensor:
        """Query accuracy of each episode after adapting to its support set: shape [E], on
        the host (the episodes move to the learner's device)."""
        episodes = self.on_device(episodes)
        return torch.stack([
            self.episode_accuracy(params, episodes.support_x[e], episodes.support_y[e],
                                  episodes.query_x[e], episodes.query_y[e])
            for e in range(episodes.num_episodes)]).cpu()


def own_shots(client: ClientData, shots: int, generator: torch.Generator
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Up to `shots` random examples of each of `client`'s classes, class by class: (inputs,
    labels relabelled 0..c-1 in class order, the classes [c])."""
    classes = client.classes
    picks = [torch.nonzero(client.y == c).flatten() for c in classes.tolist()]
    picks = [p[torch.randperm(len(p), generator=generator)[:shots]] for p in picks]
    index = torch.cat(picks)
    labels = torch.repeat_interleave(torch.arange(len(classes)),
                                     torch.tensor([len(p) for p in picks]))
    return as_float_input(client.x[index]), labels, classes
