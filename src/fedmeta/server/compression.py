"""Update compression: client stages that encode each client's update as it would travel to the
server and hand the aggregator what the server decodes. Both work per client and per tensor,
on the cohort's stacked [C, ...] tensors at once.

- `stochastic_quantization`: each value rounded at random to one of `levels` evenly spaced
  between its tensor's min and max, up or down with the probabilities that keep it unbiased
  (stochastic k-level quantization: Suresh, Yu, Kumar, McMahan 2017, "Distributed Mean
  Estimation with Limited Communication"; the min-max variant of Konečný et al. 2016,
  "Federated Learning: Strategies for Improving Communication Efficiency"). 256 levels: one
  byte a value, plus the tensor's min and step.
- `topk_error_feedback`: each tensor's k largest-magnitude values are sent, the rest is kept
  by the client and added to its next update (top-k with memory: Stich, Cordonnier, Jaggi
  2018, "Sparsified SGD with Memory"; error feedback: Karimireddy, Rebjock, Stich, Jaggi 2019,
  "Error Feedback Fixes SignSGD and other Gradient Compression Schemes").

`encoded_bytes` is the size of a tensor in each encoding, what `fedmeta.engine.communication`
counts.
"""

import math

import torch

from fedmeta.seeding import QUANTIZE_STREAM, seeded, uniform_like
from fedmeta.params import Params
from fedmeta.server.chain import Round, Stage

LEVELS_8BIT = 256


def quantize(values: torch.Tensor, levels: int, generator: torch.Generator) -> torch.Tensor:
    """Each row of `values` [C, n] as decoded after stochastic rounding to `levels` levels
    between the row's min and max: unbiased, and within one step (max - min) / (levels - 1)
    of the value."""
    low = values.amin(1, keepdim=True)
    step = (values.amax(1, keepdim=True) - low) / (levels - 1)
    step = torch.where(step > 0, step, torch.ones_like(step))  # a constant row stays itself
    noise = uniform_like(values, generator)
    level = torch.floor((values - low) / step + noise).clamp(0, levels - 1)
    return low + level * step


def stochastic_quantization(seed: int, levels: int = LEVELS_8BIT) -> Stage:
    """Every client's update, tensor by tensor, stochastically quantized to `levels` levels.
    A call's rounding draws from a generator seeded by (seed, calls so far); the count is the
    stage's state, so a resumed run draws the same."""

    def apply(rnd: Round, state: dict) -> tuple[Round, dict]:
        generator = seeded(seed, QUANTIZE_STREAM, int(state["count"]))
        decoded = {k: quantize(v.flatten(1), levels, generator).view_as(v)
                   for k, v in rnd.deltas.items()}
        return rnd.with_deltas(decoded), {"count": state["count"] + 1}

    return Stage(lambda params: {"count": torch.zeros((), dtype=torch.int64)}, apply)


def topk_count(size: int, fraction: float) -> int:
    """Values sent of a tensor of `size`: `fraction` of them, rounded, at least one."""
    return min(size, max(1, round(fraction * size)))


def topk(values: torch.Tensor, k: int) -> torch.Tensor:
    """Each row of `values` [C, n] with all but its k largest-magnitude entries zeroed."""
    chosen = values.abs().topk(k, dim=1).indices
    return torch.zeros_like(values).scatter(1, chosen, values.gather(1, chosen))


def residual_rows(known: torch.Tensor, clients: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The ids with a residual once `clients` (distinct ids, [C]) have one: `known` then the
    new ones in order of first appearance; and each client's row among them."""
    new = clients[~torch.isin(clients, known)]
    ids = torch.cat([known, new])
    order = ids.argsort()
    return ids, order[torch.searchsorted(ids[order], clients)]


def topk_error_feedback(fraction: float) -> Stage:
    """Top-k sparsification with error feedback: each client adds its residual (what it has
    not sent yet) to its update, sends the k = `fraction` x size largest-magnitude values of
    each tensor and keeps the rest as its new residual, so everything is sent eventually.

    The residuals are the stage's state, one row per client that has taken part (`clients`
    holds their ids, `residual` a [M, ...] tensor per param): memory grows with the number of
    distinct clients, the model's size each (4 bytes a float32 parameter), and checkpoints
    carry it. Rows of a negative id (the audit's canaries) are sparsified without memory."""

    def init(params: Params) -> dict:
        return {"clients": torch.zeros(0, dtype=torch.int64),
                "residual": {k: v.new_zeros(0, *v.shape) for k, v in params.items()}}

    def apply(rnd: Round, state: dict) -> tuple[Round, dict]:
        if rnd.clients is None:
            raise ValueError("error feedback needs the round's client ids (Round.clients)")
        real = torch.nonzero(rnd.clients >= 0).flatten()
        ids, rows = residual_rows(state["clients"], rnd.clients[real])
        added = len(ids) - len(state["clients"])
        sent, residual = {}, {}
        for k, v in rnd.deltas.items():
            real, rows = real.to(v.device), rows.to(v.device)  # ids stay on the host
            memory = torch.cat([state["residual"][k], v.new_zeros(added, *v.shape[1:])])
            corrected = v.index_add(0, real, memory[rows])
            k_values = topk_count(math.prod(v.shape[1:]), fraction)
            sent[k] = topk(corrected.flatten(1), k_values).view_as(v)
            residual[k] = memory.index_copy_(0, rows, (corrected - sent[k])[real])  # cat's copy
        return rnd.with_deltas(sent), {"clients": ids, "residual": residual}

    return Stage(init, apply)


def index_bytes(size: int) -> int:
    """Bytes of an index into a tensor of `size` values: the narrowest unsigned integer
    (1, 2, 4 or 8 bytes) that holds `size - 1`."""
    return next(width for width in (1, 2, 4, 8) if size - 1 < 256 ** width)


def encoded_bytes(compression: str, tensor: torch.Tensor, fraction: float) -> int:
    """Bytes of one client's `tensor` as `compression` encodes it: raw values (the tensor's
    dtype); 8-bit quantization: a byte a value plus the min and the step; top-k: k values and
    their indices (`index_bytes`: the receiver knows the shape, so an index needs only the
    bits of the tensor's size, 2 bytes up to 65,536 values)."""
    size, width = tensor.numel(), tensor.element_size()
    if compression == "quantize-8bit":
        return size + 2 * width
    if compression == "topk":
        return topk_count(size, fraction) * (width + index_bytes(size))
    return size * width
