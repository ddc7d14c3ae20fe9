"""One client's data as a file of its own: what a client machine holds in a deployment.

An `.npz` with `x` (uint8 images [n, H, W] or float32 features [n, d]), `y` (int64 labels),
`client_id` (the client's index in the federation, which seeds its draws so a deployment
reproduces a simulation) and, optionally, `query_mask` (its own query split). Loaded without
pickle; every field is checked, so a bad file fails with one line naming it.
"""

import os
from pathlib import Path

import numpy as np
import torch

from fedmeta.data.federated import ArrayFederatedDataset, ClientData, FederatedDataset
from fedmeta.errors import UserError


def save_client(path: Path, client: ClientData, client_id: int) -> None:
    """Write one client's file (to a temporary name, then renamed)."""
    arrays = {"x": client.x.numpy(), "y": client.y.numpy(), "client_id": np.int64(client_id)}
    if client.query_mask is not None:
        arrays["query_mask"] = client.query_mask.numpy()
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, path)


def load_client(path: str | Path) -> tuple[int, ClientData]:
    """(client id, its data) from a client file."""
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {key: f[key] for key in f.files}
    except FileNotFoundError:
        raise UserError(f"data error: no such client file {path}") from None
    except (OSError, ValueError) as error:
        raise UserError(f"data error: {path} is not a readable .npz: {error}") from None
    missing = {"x", "y", "client_id"} - set(arrays)
    if missing:
        raise UserError(f"data error: {path} lacks {', '.join(sorted(missing))}")
    x, y = arrays["x"], arrays["y"]
    if x.dtype != np.uint8 and x.dtype != np.float32:
        raise UserError(f"data error: {path}: x must be uint8 or float32, got {x.dtype}")
    if x.dtype == np.float32 and not np.isfinite(x).all():
        raise UserError(f"data error: {path}: x has NaN or infinite values")
    if not np.issubdtype(y.dtype, np.integer) or y.ndim != 1 or len(y) != len(x):
        raise UserError(f"data error: {path}: y must be {len(x)} integer labels")
    if len(y) == 0 or y.min() < 0:
        raise UserError(f"data error: {path}: no examples, or a negative label")
    mask = arrays.get("query_mask")
    if mask is not None and (mask.dtype != np.bool_ or mask.shape != y.shape):
        raise UserError(f"data error: {path}: query_mask must be {len(y)} booleans")
    return int(arrays["client_id"]), ClientData(
        torch.from_numpy(x), torch.from_numpy(y.astype(np.int64)),
        None if mask is None else torch.from_numpy(mask))


def clients_federated(paths: list[Path]) -> FederatedDataset:
    """Client files as a federation, client `i` the file whose `client_id` is `i`-th smallest
    (so seeded draws match a deployment over the same files)."""
    loaded = sorted((load_client(path) for path in paths), key=lambda pair: pair[0])
    clients = [client for _, client in loaded]
    sizes = np.cumsum([0] + [len(c) for c in clients])
    masks = [c.query_mask for c in clients]
    query_mask = None if any(m is None for m in masks) else torch.cat(masks).numpy()
    return ArrayFederatedDataset(
        "clients", torch.cat([c.x for c in clients]).numpy(),
        torch.cat([c.y for c in clients]).numpy(),
        [np.arange(a, b) for a, b in zip(sizes[:-1], sizes[1:])], query_mask)
