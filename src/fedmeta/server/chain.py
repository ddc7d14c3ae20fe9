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


class ChainState(dict):
    """A chain's state: one entry per stage, under the stage's name, in the chain's order."""


def named_chain(*stages: tuple[str, Stage]) -> Stage:
    """Compose stages left to right (optax's `named_chain`); the state holds each stage's
    under its name, so a checkpoint says which stage a tensor belongs to."""
    names = [name for name, _ in stages]
    if len(set(names)) != len(names):
        raise ValueError(f"a chain's stages need names of their own, got {names}")

    def init(params: Params) -> dict[str, Any]:
        return ChainState({name: stage.init(params) for name, stage in stages})

    def apply(rnd: Round, state: dict[str, Any]) -> tuple[Round, dict[str, Any]]:
        new_state = ChainState()
        for name, stage in stages:
            rnd, new_state[name] = stage.apply(rnd, state[name])
        return rnd, new_state

    return Stage(init, apply)


def chain(*stages: Stage) -> Stage:
    """Compose stages left to right, their states named by position."""
    return named_chain(*((str(i), stage) for i, stage in enumerate(stages)))


def positional(state: Any) -> Any:
    """`state` as it was before chains named their stages: each chain's entries under their
    positions ("0", "1", ...), the names older checkpoints hold."""
    if not isinstance(state, dict):
        return state
    names = ([str(i) for i in range(len(state))] if isinstance(state, ChainState)
             else list(state))
    return {name: positional(value) for name, value in zip(names, state.values())}
