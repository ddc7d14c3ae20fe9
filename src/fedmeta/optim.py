"""Functional optimizers in the style of optax: `init(params) -> state` and
`update(grads, state) -> (updates, state)`, where `updates` are added to the params.

The same transforms serve a client's local training and, fed the negated mean client delta as
a pseudo-gradient, the server (FedOpt: Reddi et al. 2021, "Adaptive Federated Optimization").
States are dicts of tensors, so they checkpoint to safetensors as they are.
"""

import math
from typing import Any, Callable, NamedTuple

import torch

from fedmeta.params import Params, tree_add, tree_map

State = dict[str, Any]


class Transform(NamedTuple):
    init: Callable[[Params], State]
    update: Callable[[Params, State], tuple[Params, State]]


def apply_updates(params: Params, updates: Params) -> Params:
    return tree_add(params, updates)


def sgd(lr: float, momentum: float = 0.0) -> Transform:
    """Stochastic gradient descent with optional heavy-ball momentum."""

    def init(params: Params) -> State:
        return {"momentum": tree_map(torch.zeros_like, params)} if momentum else {}

    def update(grads: Params, state: State) -> tuple[Params, State]:
        if momentum:
            grads = tree_map(lambda m, g: momentum * m + g, state["momentum"], grads)
            state = {"momentum": grads}
        return tree_map(lambda g: -lr * g, grads), state

    return Transform(init, update)


def _adaptive(lr: float, b1: float, b2: float, eps: float,
              second_moment: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
              bias_correction: bool) -> Transform:
    def init(params: Params) -> State:
        return {"m": tree_map(torch.zeros_like, params), "v": tree_map(torch.zeros_like, params),
                "count": torch.zeros((), dtype=torch.int64)}

    def update(grads: Params, state: State) -> tuple[Params, State]:
        count = state["count"] + 1
        m = tree_map(lambda m, g: b1 * m + (1 - b1) * g, state["m"], grads)
        v = tree_map(second_moment, state["v"], grads)
        c1 = 1 - b1 ** count.item() if bias_correction else 1.0
        c2 = 1 - b2 ** count.item() if bias_correction else 1.0
        updates = tree_map(lambda m, v: -lr * (m / c1) / ((v / c2).sqrt() + eps), m, v)
        return updates, {"m": m, "v": v, "count": count}

    return Transform(init, update)


def adam(lr: float, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8) -> Transform:
    """Adam (Kingma & Ba 2015)."""
    return _adaptive(lr, b1, b2, eps, lambda v, g: b2 * v + (1 - b2) * g * g, True)


def yogi(lr: float, b1: float = 0.9, b2: float = 0.99, eps: float = 1e-3) -> Transform:
    """Yogi (Zaheer et al. 2018): additive second-moment update; FedYogi in Reddi et al. 2021.
    As in FedOpt, no bias correction and `eps` is the adaptivity floor tau."""
    return _adaptive(lr, b1, b2, eps,
                     lambda v, g: v - (1 - b2) * g * g * torch.sign(v - g * g), False)


def proximal(mu: float, transform: Transform) -> Transform:
    """`transform` on the gradient of the loss plus FedProx's proximal term
    `mu / 2 * ||w - w0||^2` (Li et al. 2020), w0 the params it started from. The term's
    gradient `mu * (w - w0)` is `mu` times the sum of the updates so far, which the state
    keeps: so the local loop needs no copy of w0, and it runs under vmap like any optimizer."""

    def init(params: Params) -> State:
        return {"inner": transform.init(params), "moved": tree_map(torch.zeros_like, params)}

    def update(grads: Params, state: State) -> tuple[Params, State]:
        grads = tree_map(lambda g, moved: g + mu * moved, grads, state["moved"])
        updates, inner = transform.update(grads, state["inner"])
        return updates, {"inner": inner, "moved": tree_add(state["moved"], updates)}

    return Transform(init, update)


OPTIMIZERS: dict[str, Callable[..., Transform]] = {"sgd": sgd, "adam": adam, "yogi": yogi}

Schedule = Callable[[int], float]  # step (0, 1, ...) -> the factor on the base learning rate


def step_decay(every: int, gamma: float) -> Schedule:
    """The rate times `gamma` every `every` steps (Snell et al. 2017 halve it every 2000
    episodes)."""
    return lambda step: gamma ** (step // every)


def cosine_decay(total: int) -> Schedule:
    """The rate from 1x down to 0 over `total` steps on half a cosine (Loshchilov & Hutter
    2017, without restarts), then 0."""
    return lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total) / total))


def scale_updates(transform: Transform, factor: float) -> Transform:
    """`transform` with its updates times `factor`: for SGD (with momentum) and Adam, the same
    optimizer at `factor` times its learning rate."""

    def update(grads: Params, state: State) -> tuple[Params, State]:
        updates, state = transform.update(grads, state)
        return tree_map(lambda u: factor * u, updates), state

    return Transform(transform.init, update)


def scheduled(transform: Transform, schedule: Schedule) -> Transform:
    """`transform` at `schedule(step)` times its learning rate at its step-th update, the step
    counted in its state (so a checkpoint carries it)."""

    def init(params: Params) -> State:
        return {"inner": transform.init(params), "step": torch.zeros((), dtype=torch.int64)}

    def update(grads: Params, state: State) -> tuple[Params, State]:
        factor = schedule(int(state["step"]))
        updates, inner = scale_updates(transform, factor).update(grads, state["inner"])
        return updates, {"inner": inner, "step": state["step"] + 1}

    return Transform(init, update)
