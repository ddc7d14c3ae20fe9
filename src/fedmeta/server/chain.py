"""Server pipeline stages composed like optax transforms (DESIGN.md).

A stage is `init(params) -> state` and `apply(round, state) -> (round, state)`. A `Round`
carries the clients' deltas stacked with the client as the leading dimension, and their
weights; an aggregator reduces it to one delta (no client dimension), and later stages (noise,
the server optimizer) turn that into the step added to the global params.
"""

from dataclasses import dataclass, replace
from typing import Any, Callable, NamedTuple

import torch

from fedmeta.params import Params


@dataclass(frozen=True)
class Round:
    """The clients' deltas [C, ...] (one delta once `aggregated`), their weights, the L2
    norm they were clipped to, if a clipping stage ran (the sensitivity noise is scaled to),
    and the clients' ids (int64 [C], negative for the audit's canaries), for stages that keep
    per-client state; None where the round does not know them."""

    deltas: Params
    weights: torch.Tensor
    aggregated: bool = False
    clip_norm: float | None = None
    clients: torch.Tensor | None = None

    def with_deltas(self, deltas: Params, aggregated: bool | None = None) -> "Round":
        return replace(self, deltas=deltas,
                       aggregated=self.aggregated if aggregated is None else aggregated)


class Stage(NamedTuple):
    init: Callable[[Params], dict[str, Any]]
    apply: Callable[[Round, dict[str, Any]], tuple[Round, dict[str, Any]]]


def stateless(fn: Callable[[Round], Round]) -> Stage:
    """A stage that keeps no state."""
    return Stage(lambda params: {}, lambda rnd, state: (fn(rnd), state))


def chain(*stages: Stage) -> Stage:
    """Compose stages left to right; the state is one entry per stage."""

    def init(params: Params) -> dict[str, Any]:
        return {str(i): stage.init(params) for i, stage in enumerate(stages)}

    def apply(rnd: Round, state: dict[str, Any]) -> tuple[Round, dict[str, Any]]:
        new_state = {}
        for i, stage in enumerate(stages):
            rnd, new_state[str(i)] = stage.apply(rnd, state[str(i)])
        return rnd, new_state

    return Stage(init, apply)
