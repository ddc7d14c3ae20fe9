"""What a round of fedmeta is measured against, on the same clients and the same batches:

- the compute ceiling: one plain forward and backward pass (`nn.Module`, autograd) of every
  input the round pushes through the model, in the same chunks (each episode's support set and
  query set, or each minibatch; with vmap, those of a chunk of clients together), and nothing
  else: no inner loop, no optimizer, no data sampling, no aggregation;
- a naive per-client loop, as one writes it by hand in PyTorch: per client, load the global
  weights into the module, `torch.optim` steps (MAML's inner step with `torch.autograd.grad`),
  then average the clients' weight deltas;
- for MAML and first-order MAML, the same loop with each local step written as the torch.func
  MAML example (functorch's `maml-omniglot`) writes a meta-batch: one task's loss a pure
  function, `vmap`-ed over the step's tasks, `grad` of their mean.
"""

import copy
import time
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, vmap

from fedmeta.data import ClientData, Episodes
from fedmeta.device import synchronize
from fedmeta.engine.cohort import stack_batches
from fedmeta.learners.base import Learner
from fedmeta.learners.fedavg import FedAvg
from fedmeta.learners.fomaml import FOMAML
from fedmeta.learners.maml import MAML
from fedmeta.params import Params


def chunks(stacked: Any) -> list[torch.Tensor]:
    """The model inputs of one local step of a chunk of clients (batches stacked [C, ...]),
    as the learner's forward passes see them: per episode, its support and its query set;
    or the minibatch."""
    if isinstance(stacked, Episodes):
        return [x[:, e].flatten(0, 1) for e in range(stacked.support_x.shape[1])
                for x in (stacked.support_x, stacked.query_x)]
    return [stacked[0].flatten(0, 1)]


def ceiling_seconds(learner: Learner, batches: Sequence[list[Any]], chunk_size: int) -> float:
    """Forward+backward of every chunk of `batches` (per client, its local steps' batches);
    `chunk_size` clients at once (1: the per-client loop)."""
    model = copy.deepcopy(learner.model)
    synchronize()
    start = time.perf_counter()
    for first in range(0, len(batches), chunk_size):
        group = batches[first:first + chunk_size]
        for step in range(len(group[0])):
            for x in chunks(stack_batches([client[step] for client in group])):
                model(x).square().mean().backward()
    synchronize()
    return time.perf_counter() - start


def torch_optimizer(name: str, params: Any, lr: float) -> torch.optim.Optimizer:
    return {"sgd": torch.optim.SGD, "adam": torch.optim.Adam}[name](params, lr=lr)


def naive_round(learner: Learner, params: Params, clients: Sequence[ClientData],
                generators: Sequence[torch.Generator], optimizer: str, lr: float) -> Params:
    """The new global params after a hand-written per-client loop (FedAvg and the MAML family
    without per-parameter rates: FedAvg, MAML, FOMAML); same data draws as fedmeta."""
    model = copy.deepcopy(learner.model)
    deltas, weights = [], []
    for client, generator in zip(clients, generators):
        batches = learner.on_device(learner.local_batches(client, generator))
        model.load_state_dict(params)
        opt = torch_optimizer(optimizer, model.parameters(), lr)
        for batch in batches:
            opt.zero_grad()
            if isinstance(learner, FedAvg):
                x, y, mask = batch
                F.cross_entropy(model(x[mask > 0]), y[mask > 0]).backward()
            else:
                maml_step(learner, model, batch)
            opt.step()
        deltas.append({k: v.detach() - params[k] for k, v in model.named_parameters()})
        weights.append(float(len(client)))
    return averaged(params, deltas, weights)


def functorch_round(learner: MAML, params: Params, clients: Sequence[ClientData],
                    generators: Sequence[torch.Generator], optimizer: str, lr: float) -> Params:
    """The new global params after a per-client loop whose local steps are the torch.func
    MAML example's (`functorch_meta_gradient`), `torch.optim` stepping; same data draws."""
    meta_gradient = functorch_meta_gradient(learner)
    deltas, weights = [], []
    for client, generator in zip(clients, generators):
        local = {k: v.clone().requires_grad_() for k, v in params.items()}
        opt = torch_optimizer(optimizer, local.values(), lr)
        for episodes in learner.on_device(learner.local_batches(client, generator)):
            grads = meta_gradient({k: v.detach() for k, v in local.items()}, episodes)
            for k, v in local.items():
                v.grad = grads[k]
            opt.step()
        deltas.append({k: v.detach() - params[k] for k, v in local.items()})
        weights.append(float(len(client)))
    return averaged(params, deltas, weights)


def averaged(params: Params, deltas: list[Params], weights: list[float]) -> Params:
    """`params` plus the clients' deltas' weighted mean: FedAvg's server step."""
    total = sum(weights)
    return {k: v + sum(w * d[k] for w, d in zip(weights, deltas)) / total
            for k, v in params.items()}


def functorch_meta_gradient(learner: MAML):
    """(params, episodes) -> the meta-gradient of the episodes' mean query loss after one
    inner SGD step, as the torch.func MAML example computes it."""
    model, inner_lr, first_order = learner.model, learner.inner_lr, learner.first_order

    def loss(p: Params, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(functional_call(model, p, (x,)), y)

    def task_loss(p: Params, support_x, support_y, query_x, query_y) -> torch.Tensor:
        inner = grad(loss)(p, support_x, support_y)
        if first_order:
            inner = {k: g.detach() for k, g in inner.items()}
        return loss({k: p[k] - inner_lr * inner[k] for k in p}, query_x, query_y)

    def mean_loss(p: Params, episodes: Episodes) -> torch.Tensor:
        return vmap(task_loss, in_dims=(None, 0, 0, 0, 0))(
            p, episodes.support_x, episodes.support_y, episodes.query_x, episodes.query_y).mean()

    return grad(mean_loss)


def maml_step(learner: MAML, model: torch.nn.Module, episodes: Episodes) -> None:
    """Accumulate the MAML meta-gradient of a batch of episodes into `model`'s `.grad`."""
    names, weights = zip(*model.named_parameters())
    for e in range(len(episodes)):
        loss = F.cross_entropy(model(episodes.support_x[e]), episodes.support_y[e])
        grads = torch.autograd.grad(loss, weights, create_graph=not learner.first_order)
        fast = {n: w - learner.inner_lr * g for n, w, g in zip(names, weights, grads)}
        query = functional_call(model, fast, (episodes.query_x[e],))
        (F.cross_entropy(query, episodes.query_y[e]) / len(episodes)).backward()


def supports_naive(learner: Learner) -> bool:
    """Whether `naive_round` implements `learner`'s algorithm."""
    return type(learner) in (FedAvg, MAML, FOMAML) and getattr(learner, "inner_steps", 1) == 1


def supports_functorch(learner: Learner) -> bool:
    """Whether `functorch_round` implements `learner`'s algorithm."""
    return supports_naive(learner) and isinstance(learner, MAML)
