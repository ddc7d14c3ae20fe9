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
  (not measured yet);
- the character LSTM's 80 sequential steps of small matrix products are per-call overhead
  that vmap does not remove on the CPU: a cohort of 4 (LSTM 256, Shakespeare) ran 2.1x
  slower under vmap than looped for FedAvg, 1.35x for FOMAML, 1.64x for MAML (0.88x in one
  earlier MAML measurement under another load).

`auto` applies that rule: `vmap` unless the model has convolutions or LSTM layers and runs on
the CPU.
`chunk_size` bounds memory: at most that many clients' activations are alive at once.
A learner whose clients keep personal state (`Learner.keeps_state`) runs the loop: each
client's round reads and returns its own state.
"""

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn
from torch.func import vmap

from fedmeta.data import ClientData, NotEnoughData
from fedmeta.device import local_precision, to_device
from fedmeta.learners.base import Learner
from fedmeta.models.char_lstm import LSTMLayer
from fedmeta.optim import apply_updates
from fedmeta.params import Params, broadcast, tree_stack

Execution = Literal["auto", "loop", "vmap"]


@dataclass(frozen=True)
class CohortUpdates:
    """The cohort's updates: deltas [C, ...] per param, weights [C], mean local losses [C];
    `positions`: each row's client, as its position in the cohort; how many sampled clients
    could not take part (too little data for a batch), and why others failed (position ->
    reason: the exception a client's local round raised); `states`: each row's client's
    personal state after its round [C, ...] (empty unless the learner `keeps_state`)."""

    deltas: Params
    weights: torch.Tensor
    losses: torch.Tensor
    skipped: int
    positions: list[int] = field(default_factory=list)
    failures: dict[int, str] = field(default_factory=dict)
    states: Params = field(default_factory=dict)

    @property
    def num_clients(self) -> int:
        return int(self.weights.numel())

    def select(self, keep: torch.Tensor) -> "CohortUpdates":
        """The rows where `keep` (bool [C]) is set."""
        return dataclasses.replace(
            self, deltas={k: v[keep] for k, v in self.deltas.items()}, weights=self.weights[keep],
            losses=self.losses[keep], states={k: v[keep] for k, v in self.states.items()},
            positions=[p for p, kept in zip(self.positions, keep.tolist()) if kept])


@dataclass(frozen=True)
class Prepared:
    """A client's data for its local round, drawn before any compute."""

    position: int
    learner: Learner
    batches: list[Any]
    weight: float
    state: Params


def failure(error: Exception) -> str:
    return f"{type(error).__name__}: {error}"


def choose_execution(model: nn.Module, device: torch.device) -> Literal["loop", "vmap"]:
    """The measured rule: per-client loop for convolutional and recurrent models on the CPU,
    vmap otherwise."""
    looped = any(isinstance(m, (nn.modules.conv._ConvNd, LSTMLayer)) for m in model.modules())
    return "loop" if looped and device.type == "cpu" else "vmap"


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


def prepare(learners: Sequence[Learner], clients: Sequence[ClientData],
            generators: Sequence[torch.Generator], states: Sequence[Params],
            device: torch.device) -> tuple[list[Prepared], int, dict[int, str]]:
    """Each client's batches from its own generator, drawn on the host and moved to `device`,
    with its personal state: (prepared clients, how many had too little data, failures)."""
    prepared, skipped, failures = [], 0, {}
    for position, (learner, client, generator, state) in enumerate(
            zip(learners, clients, generators, states)):
        try:
            batches = to_device(learner.local_batches(client, generator), device)
            prepared.append(Prepared(position, learner, batches, float(len(client)), state))
        except NotEnoughData:
            skipped += 1
        except Exception as error:  # a broken client must not end the round
            failures[position] = failure(error)
    return prepared, skipped, failures


def run_loop(sent: Params, prepared: Sequence[Prepared],
             failures: dict[int, str]) -> list[CohortUpdates]:
    """One client's local round after another, from its row of `sent` (stacked [cohort, ...]),
    each failure recorded in `failures`."""
    updates, positions = [], []
    for client in prepared:
        try:
            start = {k: v[client.position] for k, v in sent.items()}
            updates.append(client.learner.train_local(start, client.batches, client.weight,
                                                      client.state))
            positions.append(client.position)
        except Exception as error:  # a broken client must not end the round
            failures[client.position] = failure(error)
    if not updates:
        return []
    deltas = tree_stack(u.delta for u in updates)
    device = next(iter(deltas.values())).device
    return [CohortUpdates(deltas, torch.tensor([u.weight for u in updates], device=device),
                          torch.tensor([u.loss for u in updates], device=device), 0, positions,
                          states=tree_stack(u.state for u in updates))]


def run_vmap(sent: Params, prepared: Sequence[Prepared], chunk_size: int,
             failures: dict[int, str]) -> list[CohortUpdates]:
    """Chunks of up to `chunk_size` clients, each chunk's local steps vmapped over its clients;
    the local optimizer, elementwise, steps all of them at once on the stacked tensors. A
    chunk that raises is run again one client at a time, to find the broken client."""
    chunks = []
    for start in range(0, len(prepared), chunk_size):
        chunk = prepared[start:start + chunk_size]
        try:
            chunks.append(vmapped_round(sent, chunk))
        except Exception:
            chunks += run_loop(sent, chunk, failures)
    return chunks


def vmapped_round(sent: Params, chunk: Sequence[Prepared]) -> CohortUpdates:
    """The chunk's local rounds under one `vmap`."""
    learner = chunk[0].learner
    gradient = vmap(learner.local_gradient)
    positions = [client.position for client in chunk]
    local = start = {k: v[positions] for k, v in sent.items()}
    state, step_losses = learner.local_optimizer.init(local), []
    for step in range(len(chunk[0].batches)):
        grads, loss = gradient(local, stack_batches([client.batches[step] for client in chunk]))
        steps, state = learner.local_optimizer.update(grads, state)
        local = apply_updates(local, steps)
        step_losses.append(loss.detach())
    return CohortUpdates({k: local[k] - start[k] for k in start},
                         torch.tensor([client.weight for client in chunk], device=loss.device),
                         torch.stack(step_losses).mean(0), 0, positions)


def concatenated(chunks: Sequence[CohortUpdates], sent: Params, skipped: int,
                 failures: dict[int, str]) -> CohortUpdates:
    """The chunks' rows as one cohort's updates."""
    if not chunks:
        empty = torch.zeros(0, device=next(iter(sent.values())).device)
        return CohortUpdates({k: v.new_zeros(0, *v.shape[1:]) for k, v in sent.items()},
                             empty, empty, skipped, [], failures)
    return CohortUpdates({k: torch.cat([c.deltas[k] for c in chunks]) for k in sent},
                         torch.cat([c.weights for c in chunks]),
                         torch.cat([c.losses for c in chunks]), skipped,
                         [p for c in chunks for p in c.positions], failures,
                         {k: torch.cat([c.states[k] for c in chunks]) for k in chunks[0].states})


def run_cohort(learner: Learner | Sequence[Learner], params: Params,
               clients: Sequence[ClientData], generators: Sequence[torch.Generator],
               execution: Execution = "auto", chunk_size: int = 64,
               per_client: bool = False, states: Sequence[Params] | None = None,
               precision: str = "fp32") -> CohortUpdates:
    """The cohort's local rounds by `execution` ("auto": `choose_execution`), from `params`,
    or with `per_client`, from each client's own row of `params` (stacked [C, ...], as
    `Learner.client_params` makes them). `learner`: one for every client, or one per client
    (copies sharing one model, e.g. a malicious client's poisoned one); `states`: each
    client's personal state (a learner that `keeps_state` needs them; it runs the loop). A
    client whose round raises is left out and its error recorded. `precision`: the local
    steps' (`fedmeta.device.local_precision`)."""
    learners = [learner] * len(clients) if isinstance(learner, Learner) else list(learner)
    sent = params if per_client else broadcast(params, len(clients))
    device = next(iter(sent.values())).device
    if learners and learners[0].keeps_state:
        execution = "loop"
    elif execution == "auto" and learners:
        execution = choose_execution(learners[0].model, device)
    prepared, skipped, failures = prepare(learners, clients, generators,
                                          states or [{}] * len(clients), device)
    with local_precision(device, precision):
        if execution == "loop":
            chunks = run_loop(sent, prepared, failures)
        else:
            chunks = run_vmap(sent, prepared, chunk_size, failures)
    return concatenated(chunks, sent, skipped, failures)
