"""N-way K-shot episodes (Vinyals et al. 2016, "Matching Networks for One Shot Learning").

Episodes are sampled in batches with index arithmetic only: one label sort per client gives each
class's contiguous run of examples; classes and examples are picked by argsort of random keys.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
import torch.export

from fedmeta.data.federated import ClientData, as_float_input


class NotEnoughData(ValueError):
    """A client cannot supply an N-way episode with K + Q examples per class."""

    def __init__(self, eligible: int, ways: int, per_class: int) -> None:
        super().__init__(
            f"client has {eligible} classes with >= {per_class} examples, needs {ways} for a "
            f"{ways}-way episode with {per_class} examples per class"
        )


@dataclass(frozen=True, eq=False)
class Episodes:
    """A batch of E episodes; labels are relabeled 0..N-1 within each episode.

    ``support_x`` [E, N*K, ...] float32, ``support_y`` [E, N*K] int64, ``query_x`` [E, M, ...],
    ``query_y`` [E, M] (M = N*Q for sampled episodes). ``episodes[e]`` (int or slice) returns an
    ``Episodes`` view that keeps the leading episode dimension (size 1 for an int).
    """

    support_x: torch.Tensor
    support_y: torch.Tensor
    query_x: torch.Tensor
    query_y: torch.Tensor

    @property
    def num_episodes(self) -> int:
        return int(self.support_y.shape[0])

    @property
    def ways(self) -> int:
        return int(self.support_y.max()) + 1 if self.support_y.numel() else 0

    @property
    def shots(self) -> int:
        return int(self.support_y.shape[1]) // max(self.ways, 1)

    def __len__(self) -> int:
        return self.num_episodes

    def __getitem__(self, e: int | slice) -> Episodes:
        if isinstance(e, int):
            if not -self.num_episodes <= e < self.num_episodes:
                raise IndexError(f"episode {e} out of range for {self.num_episodes} episodes")
            e = slice(e % self.num_episodes, e % self.num_episodes + 1)
        return Episodes(self.support_x[e], self.support_y[e], self.query_x[e], self.query_y[e])


torch.export.register_dataclass(Episodes)  # a pytree node, so torch.func.vmap batches its fields


class EpisodeSampler:
    """Samples ``ways``-way episodes with ``shots`` support and ``queries`` query examples per class."""

    shared_labels: ClassVar[bool] = False  # labels are each episode's own 0..N-1

    def __init__(self, ways: int, shots: int, queries: int) -> None:
        if ways < 1 or shots < 1 or queries < 0:
            raise ValueError(f"need ways >= 1, shots >= 1, queries >= 0; got {ways}, {shots}, {queries}")
        self.ways, self.shots, self.queries = ways, shots, queries

    def __str__(self) -> str:
        return f"{self.ways}-way {self.shots}-shot {self.queries}-query episodes"

    def with_queries(self, queries: int) -> EpisodeSampler:
        return EpisodeSampler(self.ways, self.shots, queries)

    @property
    def per_class(self) -> int:
        return self.shots + self.queries

    def _class_runs(self, client: ClientData) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(examples sorted by label, start and count of each eligible class's run)."""
        order = torch.sort(client.y, stable=True).indices
        _, counts = torch.unique_consecutive(client.y[order], return_counts=True)
        starts = torch.cumsum(counts, 0) - counts
        ok = counts >= self.per_class
        return order, starts[ok], counts[ok]

    def eligible(self, client: ClientData) -> bool:
        return int(self._class_runs(client)[1].numel()) >= self.ways

    def sample(self, client: ClientData, num_episodes: int, generator: torch.Generator) -> Episodes:
        """Draw ``num_episodes`` episodes; deterministic given the generator's state.

        Within an episode, examples are ordered class-major: class c's examples are at
        positions c*K .. c*K+K-1 of the support set (c*Q .. of the query set).
        """
        order, starts, counts = self._class_runs(client)
        n, k, p, e = self.ways, self.shots, self.per_class, num_episodes
        if counts.numel() < n:
            raise NotEnoughData(int(counts.numel()), n, p)
        classes = torch.rand(e, counts.numel(), generator=generator).argsort(dim=1)[:, :n]  # [E, N]
        cls_count = counts[classes]
        keys = torch.rand(e, n, int(cls_count.max()), generator=generator)
        keys.masked_fill_(torch.arange(keys.shape[-1]) >= cls_count.unsqueeze(-1), 2.0)
        picks = keys.topk(p, dim=-1, largest=False).indices  # [E, N, K+Q] positions within class
        idx = order[starts[classes].unsqueeze(-1) + picks]
        x = as_float_input(client.x[idx])  # [E, N, K+Q, ...]
        y = torch.arange(n).view(1, n, 1)
        return Episodes(
            x[:, :, :k].reshape(e, n * k, *x.shape[3:]),
            y.expand(e, n, k).reshape(e, n * k),
            x[:, :, k:].reshape(e, n * self.queries, *x.shape[3:]),
            y.expand(e, n, self.queries).reshape(e, n * self.queries),
        )


class SharedTargetsSampler:
    """Tasks of `shots` support and `queries` query examples whose targets mean the same in
    every task (a vocabulary, a rating scale), not each episode's own 0..N-1: a model's head
    scores them as it is."""

    shared_labels: ClassVar[bool] = True

    def __init__(self, shots: int, queries: int) -> None:
        if shots < 1 or queries < 1:
            raise ValueError(f"need shots >= 1 and queries >= 1; got {shots}, {queries}")
        self.shots, self.queries = shots, queries


def episodes_from_arrays(
    support_x: np.ndarray | torch.Tensor,
    support_y: np.ndarray | torch.Tensor,
    query_x: np.ndarray | torch.Tensor,
    query_y: np.ndarray | torch.Tensor,
) -> Episodes:
    """Validate user-provided episodes (e.g. ``fedmeta eval --episodes FILE.npz``).

    x: uint8 images [E, S, H, W] (0-255), float images [E, S, H, W] / [E, S, C, H, W], or float
    features [E, S, d]. y: integers [E, S]; each support set must hold every label 0..N-1 equally
    often, with the same N in all episodes, and query labels must lie in 0..N-1.
    """
    sx, sy, qx, qy = (_as_tensor(name, a) for name, a in (
        ("support_x", support_x), ("support_y", support_y), ("query_x", query_x),
        ("query_y", query_y)))
    for name, x in (("support_x", sx), ("query_x", qx)):
        if x.dtype != torch.uint8 and not x.is_floating_point():
            raise ValueError(f"{name} must be uint8 (0-255) or float, got {x.dtype}")
        if x.ndim not in ((4,) if x.dtype == torch.uint8 else (3, 4, 5)):
            raise ValueError(f"{name} must be [E, S, H, W], [E, S, C, H, W] or [E, S, d], got shape {tuple(x.shape)}")
        if x.is_floating_point() and not torch.isfinite(x).all():
            raise ValueError(f"{name} contains NaN or inf")
    for name, y, x in (("support_y", sy, sx), ("query_y", qy, qx)):
        if y.is_floating_point() or y.dtype == torch.bool or y.ndim != 2 or tuple(y.shape) != tuple(x.shape[:2]):
            raise ValueError(f"{name} must be integer [E, S] matching x's {tuple(x.shape[:2])}, got {y.dtype} {tuple(y.shape)}")
    if sx.shape[0] != qx.shape[0] or sx.shape[0] == 0:
        raise ValueError(f"support and query need the same non-zero episode count, got {sx.shape[0]} and {qx.shape[0]}")
    if sx.shape[2:] != qx.shape[2:] or sx.dtype != qx.dtype:
        raise ValueError(f"support_x and query_x item shapes/dtypes differ: {tuple(sx.shape[2:])} vs {tuple(qx.shape[2:])}")
    if sy.shape[1] == 0 or sy.min() < 0:
        raise ValueError("support labels must be non-negative, and support sets non-empty")
    ways = int(sy.max()) + 1
    if ways > sy.shape[1]:
        raise ValueError(f"support label {ways - 1} cannot be one of 0..N-1 with support sets of "
                         f"{sy.shape[1]} examples")
    counts = torch.nn.functional.one_hot(sy.long(), ways).sum(1)  # [E, N]
    if not (counts == counts[0, 0]).all() or counts[0, 0] == 0:
        raise ValueError(f"each support set must contain every label 0..{ways - 1} equally often")
    if qy.numel() and (qy.min() < 0 or qy.max() >= ways):
        raise ValueError(f"query labels must lie in 0..{ways - 1}")
    sx, qx = (as_float_input(x) if x.dtype == torch.uint8 else
              x.to(torch.float32).unsqueeze(2) if x.ndim == 4 else x.to(torch.float32) for x in (sx, qx))
    return Episodes(sx, sy.long(), qx, qy.long())


def _as_tensor(name: str, array: np.ndarray | torch.Tensor) -> torch.Tensor:
    """A user's array as a tensor: numbers only, unsigned integers wider than uint8 as int64
    (torch cannot take their min)."""
    if isinstance(array, torch.Tensor):
        return array
    array = np.asarray(array)
    if array.dtype.kind not in "biuf":
        raise ValueError(f"{name} must hold numbers, got {array.dtype}")
    return torch.as_tensor(array.astype(np.int64) if array.dtype.kind == "u" and
                           array.itemsize > 1 else array)
