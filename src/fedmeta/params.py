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


def table_rows(table: Params | None, rows: list[int]) -> list[Params]:
    """Rows `rows` of stacked params `table` ([N, ...]), one dict each (empty without a
    table)."""
    return [{k: v[r] for k, v in (table or {}).items()} for r in rows]


def broadcast(params: Params, count: int) -> Params:
    """`params` as `count` stacked rows [count, ...]: views of the same tensors, no copies."""
    return {k: v.expand(count, *v.shape) for k, v in params.items()}


def owned(tensor: torch.Tensor) -> torch.Tensor:
    """`tensor` copied into memory of its own, aligned as torch aligns what it allocates (64
    bytes). A tensor read from a file or a message is a view of its buffer at whatever offset
    the format gives (safetensors: 8 bytes), and MKL's matrix products round differently by
    the alignment of their operands on some CPUs (its SSE4.2 kernels, seen here), so the same
    values read back would compute other bits than the run that wrote them did."""
    return tensor.clone(memory_format=torch.contiguous_format)


def detached(params: Params) -> Params:
    return {k: v.detach().clone() for k, v in params.items()}


def flatten_rows(stacked: Params) -> torch.Tensor:
    """Stacked params [C, ...] as one matrix [C, total size], params in key order."""
    return torch.cat([v.flatten(1) for v in stacked.values()], 1)


def unflatten(vector: torch.Tensor, like: Params) -> Params:
    """A flat vector back to params shaped as one row of `like` (stacked [C, ...] params), of
    its dtypes and on its device."""
    sizes = [v[0].numel() for v in like.values()]
    return {k: part.view(v.shape[1:]).to(v)
            for (k, v), part in zip(like.items(), vector.split(sizes))}
