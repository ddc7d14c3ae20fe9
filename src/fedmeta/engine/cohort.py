"""Cohort execution: every sampled client's local round, one client at a time or a chunk of
clients at once under `torch.func.vmap`, returning the updates stacked as the server pipeline
takes them ([C, ...] per param).

Both strategies run the same steps on the same data (each client's batches come from its own
generator before any compute), so they agree to float rounding. Which is faster depends on the
model and the device, measured by `fedmeta bench` (BENCHMARKS.md):

- `vmap` turns a cohort of small dense models into batched matrix products: FedAvg's MLP on
  LEAF Synthetic, a cohort of 100, ran 7.5x faster than the per-client loop on a 2-core CPU,
  where `torch.func`'s per-call overhead, not arithmetic, is the cost of a client;
- with convolutions and per-client weights, vmap becomes grouped convolutions, which the CPU
  runs slower than one plain convolution per client (Conv-4 on Omniglot: 1.5x slower
  for first-order MAML, 2.4x for MAML); a GPU is where grouped convolutions should pay
  (not measured yet).

`auto` applies that rule: `vmap` unless the model has convolutions and runs on the CPU.
`chunk_size` bounds memory: at most that many clients' activations are alive at once.
"""

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn
from torch.func import vmap

from fedmeta.data import ClientData, NotEnoughData
from fedmeta.learners.base import Learner
from fedmeta.optim import apply_updates
from fedmeta.params import Params, tree_stack

Execution = Literal["auto", "loop", "vmap"]


@dataclass(frozen=True)
class CohortUpdates:
    """The cohort's updates: deltas [C, ...] per param, weights [C], mean local losses [C], and
    how many sampled clients could not take part (too little data for a batch)."""

    deltas: Params
    weights: torch.Tensor
    losses: torch.Tensor
    skipped: int

    @property
    def num_clients(self) -> int:
        return int(self.weights.numel())


def choose_execution(model: nn.Module, device: torch.device) -> Literal["loop", "vmap"]:
    """The measured rule: per-client loop for convolutional models on the CPU, vmap otherwise."""
    convolutional = any(isinstance(m, nn.modules.conv._ConvNd) for m in model.modules())
    return "loop" if convolutional and device.type == "cpu" else "vmap"


def stack_batches(batches: Sequence[Any]) -> Any:
    """Stack clients' batches (tensors, or tuples, dicts or dataclasses of them) on a new
    leading client dimension."""
    first = batches[0]
    if isinstance(first, torch.Tensor):
        return torch.stack(list(batches))
    if isinstance(first, dict):
        return {k: stack_batches([b[k] for b in batches]) for k in first}
    if dataclasses.is_dataclass(first):
        return type(first)(*(stack_batches([getattr(b, f.name) for b in batches])
                             for f in dataclasses.fields(first)))
    return type(first)(stack_batches(parts) for parts in zip(*batches))


def run_loop(learner: Learner, params: Params, clients: Sequence[ClientData],
             generators: Sequence[torch.Generator]) -> CohortUpdates:
    """One `client_update` after another."""
    updates, skipped = [], 0
    for client, generator in zip(clients, generators):
        try:
            updates.append(learner.client_update(params, client, generator))
        except NotEnoughData:
            skipped += 1
    if not updates:
        return empty_updates(params, skipped)
    return CohortUpdates(tree_stack(u.delta for u in updates),
                         torch.tensor([u.weight for u in updates]),
                         torch.tensor([u.loss for u in updates]), skipped)


def run_vmap(learner: Learner, params: Params, clients: Sequence[ClientData],
             generators: Sequence[torch.Generator], chunk_size: int) -> CohortUpdates:
    """Chunks of up to `chunk_size` clients, each chunk's local steps vmapped over its clients;
    the local optimizer, elementwise, steps all of them at once on the stacked tensors."""
    data, weights, skipped = [], [], 0
    for client, generator in zip(clients, generators):
        try:
            data.append(learner.local_batches(client, generator))
            weights.append(float(len(client)))
        except NotEnoughData:
            skipped += 1
    if not data:
        return empty_updates(params, skipped)
    gradient = vmap(learner.local_gradient)
    deltas, losses = [], []
    for start in range(0, len(data), chunk_size):
        chunk = data[start:start + chunk_size]
        local = {k: v.expand(len(chunk), *v.shape) for k, v in params.items()}
        state, step_losses = learner.local_optimizer.init(local), []
        for step in range(len(chunk[0])):
            grads, loss = gradient(local, stack_batches([batches[step] for batches in chunk]))
            steps, state = learner.local_optimizer.update(grads, state)
            local = apply_updates(local, steps)
            step_losses.append(loss.detach())
        deltas.append({k: local[k] - params[k] for k in params})
        losses.append(torch.stack(step_losses).mean(0))
    return CohortUpdates({k: torch.cat([d[k] for d in deltas]) for k in params},
                         torch.tensor(weights), torch.cat(losses), skipped)


def empty_updates(params: Params, skipped: int) -> CohortUpdates:
    return CohortUpdates({k: v.new_zeros(0, *v.shape) for k, v in params.items()},
                         torch.zeros(0), torch.zeros(0), skipped)


def run_cohort(learner: Learner, params: Params, clients: Sequence[ClientData],
               generators: Sequence[torch.Generator], execution: Execution = "auto",
               chunk_size: int = 64) -> CohortUpdates:
    """The cohort's local rounds by `execution` ("auto": `choose_execution`)."""
    if execution == "auto":
        execution = choose_execution(learner.model, next(iter(params.values())).device)
    if execution == "loop":
        return run_loop(learner, params, clients, generators)
    return run_vmap(learner, params, clients, generators, chunk_size)
