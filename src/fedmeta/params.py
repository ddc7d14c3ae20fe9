"""Params are pytrees: `dict[str, Tensor]`. Small helpers to do arithmetic on them."""

from collections.abc import Callable, Iterable

import torch

Params = dict[str, torch.Tensor]


def tree_map(fn: Callable[..., torch.Tensor], *trees: Params) -> Params:
    """Apply `fn` leaf-wise over params dicts with the same keys."""
    return {k: fn(*(t[k] for t in trees)) for k in trees[0]}


def tree_add(a: Params, b: Params) -> Params:
    return tree_map(torch.add, a, b)


def tree_sub(a: Params, b: Params) -> Params:
    return tree_map(torch.sub, a, b)


def tree_stack(trees: Iterable[Params]) -> Params:
    """Stack a sequence of params into one params with a leading dimension."""
    trees = list(trees)
    return {k: torch.stack([t[k] for t in trees]) for k in trees[0]}


def detached(params: Params) -> Params:
    return {k: v.detach().clone() for k, v in params.items()}
