"""The inner loop of gradient-based meta-learning: plain SGD steps on a task loss, written with
`torch.func.grad` so that an outer `torch.func.grad` differentiates through every step (MAML,
Finn, Abbeel, Levine 2017, Eq. 1), or, with `first_order`, treats the inner gradients as
constants (first-order MAML, ibid. Sec. 5.2).
"""

from collections.abc import Callable

import torch
from torch.func import grad_and_value

from fedmeta.params import Params

LearningRate = float | Params  # one rate for all params, or one tensor per param (Meta-SGD)


def sgd_steps(loss: Callable[[Params], torch.Tensor], params: Params, lr: LearningRate,
              steps: int, first_order: bool = False) -> tuple[Params, torch.Tensor]:
    """`steps` SGD steps `p <- p - lr * dloss/dp`; returns (final params, mean loss over the
    steps, each taken before its update)."""
    losses = []
    for _ in range(steps):
        # First order, the gradient is a constant to any outer transform: take it at detached
        # params, so the outer `grad` does not also trace this step's forward and backward.
        at = {k: p.detach() for k, p in params.items()} if first_order else params
        grads, value = grad_and_value(loss)(at)
        params = {k: p - (lr[k] if isinstance(lr, dict) else lr) * grads[k]
                  for k, p in params.items()}
        losses.append(value)
    return params, torch.stack(losses).mean()
