"""Federated datasets: clients as index sets into shared arrays, materialized lazily.

Follows the LEAF view of federated data (Caldas et al. 2018, arXiv:1812.01097): a client is a
natural partition (writer, alphabet, ...) with its own optional train/test ("query") split.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True, eq=False)
class ClientData:
    """One client's examples: ``x`` uint8 images [n,H,W] or float32 features [n,d], ``y`` int64
    labels [n] or float32 targets [n] (ratings, `fedmeta.data.movielens`).

    ``query_mask`` (bool [n]) marks the client's own query/test examples where the dataset
    defines such a split (e.g. LEAF's per-writer train/test split).
    """

    x: torch.Tensor
    y: torch.Tensor
    query_mask: torch.Tensor | None = None

    def __post_init__(self) -> None:
        n = self.y.shape[0]
        if self.x.shape[0] != n or (self.query_mask is not None and self.query_mask.shape[0] != n):
            raise ValueError(f"ClientData length mismatch: x {tuple(self.x.shape)}, y {tuple(self.y.shape)}")

    def __len__(self) -> int:
        return int(self.y.shape[0])

    @property
    def classes(self) -> torch.Tensor:
        """Sorted unique labels."""
        return torch.unique(self.y)


ClientTransform = Callable[[ClientData], ClientData]


class FederatedDataset(ABC):
    """A population of clients; ``client(i)`` builds client ``i``'s data on demand."""

    name: str

    @property
    @abstractmethod
    def num_clients(self) -> int: ...

    @abstractmethod
    def client(self, i: int) -> ClientData: ...

    @abstractmethod
    def client_size(self, i: int) -> int:
        """Number of examples of client ``i`` without materializing it."""

    @property
    @abstractmethod
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one model input after :func:`as_float_input`, e.g. (1, 28, 28) or (60,)."""

    @property
    @abstractmethod
    def num_classes(self) -> int:
        """Number of distinct global labels over all clients (1 for float targets: one
        output, the predicted value)."""

    num_items: int = 0  # a recommendation dataset's item space (its model's item embeddings)

    def __len__(self) -> int:
        return self.num_clients

    def _check_index(self, i: int) -> int:
        if not -self.num_clients <= i < self.num_clients:
            raise IndexError(f"client {i} out of range for {self.num_clients} clients")
        return i % self.num_clients


class ArrayFederatedDataset(FederatedDataset):
    """Clients given as index arrays into shared numpy arrays ``x`` and ``y`` (integer labels,
    or float targets: then ``num_classes`` is 1), ``num_items`` the item space they index.

    ``transform`` maps a gathered client to its final form (e.g. Omniglot's rotated copies) and
    multiplies each client's size by ``expansion``. ``num_classes`` defaults to the number of
    distinct labels among the indexed examples times ``expansion``.
    """

    def __init__(
        self,
        name: str,
        x: np.ndarray,
        y: np.ndarray,
        client_indices: Sequence[np.ndarray],
        query_mask: np.ndarray | None = None,
        transform: ClientTransform | None = None,
        expansion: int = 1,
        num_classes: int | None = None,
        num_items: int = 0,
    ) -> None:
        n = len(y)
        if x.shape[0] != n or (query_mask is not None and query_mask.shape[0] != n):
            raise ValueError(f"{name}: x, y and query_mask must have the same length, got {x.shape[0]}, {n}")
        if x.dtype != np.uint8 and not np.issubdtype(x.dtype, np.floating):
            raise ValueError(f"{name}: x must be uint8 images or float features, got {x.dtype}")
        if np.issubdtype(x.dtype, np.floating) and np.isnan(x).any():
            raise ValueError(f"{name}: x contains NaN")
        targets = np.issubdtype(y.dtype, np.floating)
        if targets and not np.isfinite(y).all():
            raise ValueError(f"{name}: targets must be finite")
        if not targets and (not np.issubdtype(y.dtype, np.integer) or (n and y.min() < 0)):
            raise ValueError(f"{name}: labels must be non-negative integers or float targets")
        indices = [np.asarray(ix, dtype=np.int64) for ix in client_indices]
        flat = np.concatenate(indices) if indices else np.zeros(0, np.int64)
        if flat.size and (flat.min() < 0 or flat.max() >= n):
            raise ValueError(f"{name}: client indices out of range [0, {n})")
        self.name, self.num_items = name, num_items
        self._x, self._y = x, y.astype(np.float32 if targets else np.int64, copy=False)
        self._mask = None if query_mask is None else query_mask.astype(bool, copy=False)
        self._indices = indices
        self._transform, self._expansion = transform, expansion
        self._num_classes = (
            num_classes if num_classes is not None else 1 if targets
            else int(np.unique(self._y[flat]).size) * expansion
        )

    @property
    def num_clients(self) -> int:
        return len(self._indices)

    def client_size(self, i: int) -> int:
        return len(self._indices[self._check_index(i)]) * self._expansion

    def client_indices(self, i: int) -> np.ndarray:
        """Positions of client ``i``'s examples in the shared arrays (before ``transform``)."""
        return self._indices[self._check_index(i)]

    def client(self, i: int) -> ClientData:
        ix = self.client_indices(i)
        mask = None if self._mask is None else torch.from_numpy(self._mask[ix])
        data = ClientData(torch.from_numpy(self._x[ix]), torch.from_numpy(self._y[ix]), mask)
        return data if self._transform is None else self._transform(data)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return float_input_shape(tuple(self._x.shape[1:]), self._x.dtype == np.uint8)

    def subset(self, name: str, clients: Sequence[int]) -> ArrayFederatedDataset:
        """The clients at positions ``clients``, in that order, over the same arrays; the label
        space (``num_classes``) stays this dataset's, so a head sized for it fits both."""
        return ArrayFederatedDataset(name, self._x, self._y, [self._indices[i] for i in clients],
                                     self._mask, self._transform, self._expansion,
                                     self._num_classes, self.num_items)

    def regrouped(self, name: str, client_indices: Sequence[np.ndarray]) -> ArrayFederatedDataset:
        """Clients holding `client_indices` of the same arrays, without a query mask (their
        examples split elsewhere); the label space stays this dataset's."""
        return ArrayFederatedDataset(name, self._x, self._y, client_indices, None,
                                     self._transform, self._expansion, self._num_classes,
                                     self.num_items)

    def one_bit(self) -> ArrayFederatedDataset:
        """The same clients with their uint8 images thresholded at one half (0 or 255), as
        the bundled 1-bit Omniglot is stored."""
        x = np.where(self._x >= 128, np.uint8(255), np.uint8(0))
        return ArrayFederatedDataset(self.name, x, self._y, self._indices, self._mask,
                                     self._transform, self._expansion, self._num_classes,
                                     self.num_items)

    def query_mask_of(self, i: int) -> np.ndarray | None:
        """Which of client ``i``'s examples are its query (None: no such split)."""
        return None if self._mask is None else self._mask[self.client_indices(i)]

    @property
    def num_classes(self) -> int:
        return self._num_classes


def pool(clients: Sequence[ClientData]) -> ClientData:
    """`clients` as one client, each client's classes classes of their own: the held-out
    classes as a centralized few-shot benchmark draws its episodes from them (e.g.
    Omniglot's evaluation alphabets pooled, Vinyals et al. 2016), where a federated new
    client holds one alphabet."""
    offsets = np.cumsum([0] + [int(c.y.max()) + 1 if len(c) else 0 for c in clients])
    return ClientData(torch.cat([c.x for c in clients]),
                      torch.cat([c.y + int(offset) for c, offset in zip(clients, offsets)]))


def as_float_input(x: torch.Tensor) -> torch.Tensor:
    """uint8 images [..., H, W] -> float32 [..., 1, H, W] in [0, 1]; float features pass
    through, as float32; int64 token ids (text) pass through, for the model to embed."""
    if x.dtype == torch.uint8:
        return (x.to(torch.float32) / 255.0).unsqueeze(-3)
    if x.dtype == torch.int64:
        return x
    return x if x.dtype == torch.float32 else x.to(torch.float32)


def float_input_shape(example_shape: tuple[int, ...], images: bool) -> tuple[int, ...]:
    """One model input's shape after :func:`as_float_input`: uint8 images gain a channel."""
    return (1, *example_shape) if images else example_shape


def split_support_query(
    client: ClientData, query_fraction: float, seed: int
) -> tuple[ClientData, ClientData]:
    """Split a client into (support, query).

    Uses ``client.query_mask`` when present; otherwise a per-class stratified random split with
    ``round(query_fraction * count)`` query examples per class, always leaving one support
    example per class. Deterministic given ``seed``.
    """
    if client.query_mask is not None:
        query = client.query_mask
    else:
        if not 0.0 < query_fraction < 1.0:
            raise ValueError(f"query_fraction must be in (0, 1), got {query_fraction}")
        g = torch.Generator().manual_seed(seed)
        perm = torch.randperm(len(client), generator=g)
        order = perm[torch.sort(client.y[perm], stable=True).indices]
        _, counts = torch.unique_consecutive(client.y[order], return_counts=True)
        starts = torch.cumsum(counts, 0) - counts
        rank = torch.arange(len(client)) - torch.repeat_interleave(starts, counts)
        n_query = torch.minimum(torch.round(counts.double() * query_fraction).long(), counts - 1)
        query = torch.zeros(len(client), dtype=torch.bool)
        query[order] = rank < torch.repeat_interleave(n_query, counts)
    support = ~query
    return (
        ClientData(client.x[support], client.y[support]),
        ClientData(client.x[query], client.y[query]),
    )
