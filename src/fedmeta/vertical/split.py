"""A split network for vertical federated learning (Vepakomma et al. 2018, "Split learning for
health"; Hu et al. 2019, "FDML"): each party runs a bottom model on its own columns; the label
party (party 0) concatenates the cut-layer embeddings and runs the top model on them.

What crosses, and nothing else: each other party's embeddings [B, E] go up, the gradient of the
loss with respect to them comes back down. Both are explicit tensors here: a party computes its
embedding with `torch.func.vjp` and keeps the pull-back, the label party differentiates its
loss with respect to the embeddings it received, and the party pulls the gradient it is sent
back through its own bottom model. The label party's own embedding never leaves it.

The gradient sent down for person i is that of person i's own loss (per-example, not divided
by the batch size), so a clip norm on it means the same whatever the batch; the party divides
by the batch size itself. Without protection, the parties' gradients are exactly those of the
whole network on the concatenated columns (tests/test_vertical_split.py).
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad_and_value, vjp

from fedmeta.models import MLP
from fedmeta.optim import Transform, apply_updates
from fedmeta.params import Params
from fedmeta.vertical.protection import Protection


@dataclass(frozen=True)
class SplitNetwork:
    """Bottom models, one per party (party 0 the label party), and the label party's top."""

    bottoms: tuple[nn.Module, ...]
    top: nn.Module

    @classmethod
    def mlp(cls, columns: Sequence[int], hidden: int, embedding: int, top_hidden: int,
            num_classes: int) -> "SplitNetwork":
        """Party p: an MLP of `columns[p]` inputs -> `hidden` -> `embedding` (ReLU each); top:
        the concatenated embeddings -> `top_hidden` -> `num_classes` logits."""
        bottoms = tuple(MLP((c,), (hidden, embedding)) for c in columns)
        return cls(bottoms, MLP((embedding * len(columns),), (top_hidden,), num_classes))

    def init_params(self) -> tuple[list[Params], Params]:
        return [initial_params(b) for b in self.bottoms], initial_params(self.top)


def initial_params(module: nn.Module) -> Params:
    """A copy of a module's params, to train functionally."""
    return {k: v.detach().clone() for k, v in module.named_parameters()}


def tensor_bytes(tensor: torch.Tensor) -> int:
    """The bytes of a tensor sent as its raw values."""
    return tensor.numel() * tensor.element_size()


def embedding(module: nn.Module, params: Params, x: torch.Tensor,
              protection: Protection) -> torch.Tensor:
    """A party's cut-layer embedding [B, E] of its rows `x`, clipped as `protection` says
    (the party's own act, so differentiated through)."""
    return protection.clip_rows(functional_call(module, params, (x,)))


def embed(module: nn.Module, params: Params, x: torch.Tensor, protection: Protection
          ) -> tuple[torch.Tensor, Callable[[torch.Tensor], tuple[Params]]]:
    """`embedding`, and the pull-back of a gradient with respect to it onto the params."""
    return vjp(lambda p: embedding(module, p, x, protection), params)


def label_loss(top: nn.Module, top_params: Params, embeddings: Sequence[torch.Tensor],
               y: torch.Tensor) -> torch.Tensor:
    """The label party's summed cross-entropy of the top model on the embeddings."""
    logits = functional_call(top, top_params, (torch.cat(list(embeddings), 1),))
    return F.cross_entropy(logits, y, reduction="sum")


@dataclass
class Traffic:
    """Bytes that crossed the cut: embeddings up, gradients down."""

    up: int = 0
    down: int = 0

    @property
    def total(self) -> int:
        return self.up + self.down


@dataclass
class StepRecord:
    """What one step sent down to party 1 (the attacked party) and the labels behind it."""

    gradients: torch.Tensor  # [B, E], as party 1 received them
    labels: torch.Tensor  # [B]
    epoch: int


class SplitState(NamedTuple):
    bottoms: list[Params]
    top: Params


def send_up(module: nn.Module, params: Params, x: torch.Tensor, up: Protection,
            noise: torch.Generator | None
            ) -> tuple[torch.Tensor, Callable[[torch.Tensor], tuple[Params]]]:
    """A non-label party's side of a step: its embedding of its rows as it crosses (clipped
    and noised by `up`, from its private `noise`), and the pull-back onto its params."""
    h, pull = embed(module, params, x, up)
    return up.add_noise(h, noise), pull


def label_side(head: Callable[[Params, list[torch.Tensor]], torch.Tensor], head_params: Params,
               received: list[torch.Tensor], down: Protection,
               noise: torch.Generator | None) -> tuple[Params, torch.Tensor, list[torch.Tensor]]:
    """The label party's side of a step, given every party's embedding (its own first): the
    gradients of the loss `head(head_params, received)` for its params, the loss, and for each
    embedding its gradient (its own as is, the others' as they cross, protected by `down`)."""
    (head_grads, embedding_grads), loss = grad_and_value(head, argnums=(0, 1))(head_params,
                                                                                received)
    sent = [g if party == 0 else down.release(g, noise)
            for party, g in enumerate(embedding_grads)]
    return head_grads, loss, sent


def exchange(bottoms: Sequence[nn.Module], params: Sequence[Params],
             xs: Sequence[torch.Tensor], head: Callable[[Params, list[torch.Tensor]], torch.Tensor],
             head_params: Params, up: Protection = Protection(),
             down: Protection = Protection(), noise: torch.Generator | None = None,
             traffic: Traffic | None = None
             ) -> tuple[list[Params], Params, torch.Tensor, list[torch.Tensor]]:
    """One pass across the cut. Each party embeds its rows `xs[p]`; the other parties' embeddings
    cross (protected by `up`); the label party's `head(head_params, embeddings)` gives the loss,
    differentiated with respect to its params and to each embedding; the gradients cross back
    (protected by `down`), and each party pulls its own back onto its params. `noise`: the
    parties' private randomness (never a stream another party knows). Returns the
    bottoms' gradients, the head's, the loss, and the gradient each party received ([B, E];
    party 0's its own). `traffic` counts the bytes that crossed."""
    embedded = [embed(bottoms[0], params[0], xs[0], Protection())] + [
        send_up(m, p, x, up, noise) for m, p, x in zip(bottoms[1:], params[1:], xs[1:])]
    received = [h for h, _ in embedded]
    head_grads, loss, sent = label_side(head, head_params, received, down, noise)
    if traffic is not None:
        traffic.up += sum(tensor_bytes(h) for h in received[1:])
        traffic.down += sum(tensor_bytes(g) for g in sent[1:])
    bottom_grads = [pull(g)[0] for (_, pull), g in zip(embedded, sent)]
    return bottom_grads, head_grads, loss, sent


def batch_mean(grads: Params, rows: int) -> Params:
    """Gradients of a loss summed over `rows` rows, as those of its mean."""
    return {k: v / rows for k, v in grads.items()}


def split_gradients(network: SplitNetwork, bottoms: Sequence[Params], top: Params,
                    xs: Sequence[torch.Tensor], y: torch.Tensor,
                    up: Protection = Protection(), down: Protection = Protection(),
                    noise: torch.Generator | None = None, traffic: Traffic | None = None
                    ) -> tuple[list[Params], Params, torch.Tensor, list[torch.Tensor]]:
    """`exchange` for the split network on a batch of labels `y`: the gradients of the mean
    loss for each party's bottom params and the top's, the summed loss, and the per-example
    gradients each party received."""
    bottom_grads, top_grads, loss, sent = exchange(
        network.bottoms, bottoms, xs, lambda t, hs: label_loss(network.top, t, hs, y), top,
        up, down, noise, traffic)
    return ([batch_mean(g, len(y)) for g in bottom_grads], batch_mean(top_grads, len(y)), loss,
            sent)


def optimizer_step(optimizer: Transform, params: list[Params], grads: Sequence[Params],
                   states: list) -> None:
    """Each party's step on its own params with its own optimizer state (lists updated in
    place)."""
    for i, g in enumerate(grads):
        updates, states[i] = optimizer.update(g, states[i])
        params[i] = apply_updates(params[i], updates)


def train_split(network: SplitNetwork, xs: Sequence[torch.Tensor], y: torch.Tensor,
                epochs: int, batch_size: int, optimizer: Transform, generator: torch.Generator,
                up: Protection = Protection(), down: Protection = Protection(),
                noise: torch.Generator | None = None, record: bool = False
                ) -> tuple[SplitState, Traffic, list[float], list[StepRecord]]:
    """Train on aligned rows (`xs[p]` party p's [N, d_p], `y` [N]) for `epochs` passes of
    shuffled minibatches, every party with its own `optimizer` state. The parties draw the
    shuffles from one `generator` they agreed the seed of (as the split into training and
    held-out rows), so no row index crosses a step; protection draws from `noise`, the
    parties' private randomness. Returns the trained state, the traffic of all epochs, each
    epoch's mean loss, and (with `record`) what party 1 was sent each step."""
    bottoms, top = network.init_params()
    params = [*bottoms, top]  # each party's bottom, then the label party's top
    states = [optimizer.init(p) for p in params]
    traffic, losses, records = Traffic(), [], []
    n = len(y)
    for epoch in range(epochs):
        total = 0.0
        for batch in torch.randperm(n, generator=generator).split(batch_size):
            bottom_grads, top_grads, loss, sent = split_gradients(
                network, params[:-1], params[-1], [x[batch] for x in xs], y[batch], up, down,
                noise, traffic)
            total += float(loss)
            if record and len(sent) > 1:
                records.append(StepRecord(sent[1].detach(), y[batch], epoch))
            optimizer_step(optimizer, params, [*bottom_grads, top_grads], states)
        losses.append(total / n)
    return SplitState(params[:-1], params[-1]), traffic, losses, records


def crossing_embedding(module: nn.Module, params: Params, x: torch.Tensor, up: Protection,
                       noise: torch.Generator | None) -> torch.Tensor:
    """A non-label party's embedding of rows to score, as it crosses (protected as in
    training)."""
    with torch.no_grad():
        return up.add_noise(embedding(module, params, x, up), noise)


def top_probabilities(network: SplitNetwork, state: SplitState, x: torch.Tensor,
                      received: Sequence[torch.Tensor]) -> torch.Tensor:
    """The label party's class probabilities [N, C] from its own rows `x` and the other
    parties' embeddings `received`."""
    with torch.no_grad():
        own = embedding(network.bottoms[0], state.bottoms[0], x, Protection())
        logits = functional_call(network.top, state.top, (torch.cat([own, *received], 1),))
        return logits.softmax(1)


def predict(network: SplitNetwork, state: SplitState, xs: Sequence[torch.Tensor],
            up: Protection = Protection(), noise: torch.Generator | None = None,
            traffic: Traffic | None = None) -> torch.Tensor:
    """Class probabilities [N, C] of aligned rows; the other parties' embeddings cross
    protected as in training."""
    received = [crossing_embedding(m, p, x, up, noise)
                for m, p, x in zip(network.bottoms[1:], state.bottoms[1:], xs[1:])]
    if traffic is not None:
        traffic.up += sum(tensor_bytes(h) for h in received)
    return top_probabilities(network, state, xs[0], received)
