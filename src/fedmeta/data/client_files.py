"""One client's data as a file of its own: what a client machine holds in a deployment.

An `.npz` with `x` (uint8 images [n, H, W] or float32 features [n, d]), `y` (int64 labels),
`client_id` (the client's index in the federation, which seeds its draws so a deployment
reproduces a simulation) and, optionally, `query_mask` (its own query split). Loaded without
pickle; every field is checked, so a bad file fails with one line naming it.
"""

from pathlib import Path

import numpy as np
import torch

from fedmeta.atomic import atomic_path
from fedmeta.data.federated import ArrayFederatedDataset, ClientData, FederatedDataset
from fedmeta.data.npz import check_column, data_error, described, load_npz


def save_client(path: Path, client: ClientData, client_id: int) -> None:
    """Write one client's file (to a temporary name, then renamed)."""
    arrays = {"x": client.x.numpy(), "y": client.y.numpy(), "client_id": np.int64(client_id)}
    if client.query_mask is not None:
        arrays["query_mask"] = client.query_mask.numpy()
    with atomic_path(path, ".tmp.npz") as tmp:  # numpy would add .npz to another name
        np.savez_compressed(tmp, **arrays)


def load_client(path: str | Path) -> tuple[int, ClientData]:
    """(client id, its data) from a client file."""
    arrays = load_npz(path, ("x", "y", "client_id"), optional=("query_mask",))
    x, y, client_id = arrays["x"], arrays["y"], arrays["client_id"]
    images, features = x.dtype == np.uint8 and x.ndim == 3, x.dtype == np.float32 and x.ndim >= 2
    if not (images or features) or not x.size:
        raise data_error(path, f"x must be uint8 images [n, H, W] or float32 features [n, d], "
                               f"n > 0, got {described(x)}")
    if features and not np.isfinite(x).all():
        raise data_error(path, "x has NaN or infinite values")
    check_column(path, "y", y, len(x), "iu")
    if y.min() < 0:
        raise data_error(path, f"y has a negative label ({y.min()})")
    if client_id.shape != () or client_id.dtype.kind not in "iu" or client_id < 0:
        raise data_error(path, f"client_id must be one non-negative integer, "
                               f"got {described(client_id)}")
    mask = arrays.get("query_mask")
    if mask is not None and (mask.dtype != np.bool_ or mask.shape != y.shape):
        raise data_error(path, f"query_mask must be {len(y)} booleans, got {described(mask)}")
    return int(client_id), ClientData(
        torch.from_numpy(x), torch.from_numpy(y.astype(np.int64)),
        None if mask is None else torch.from_numpy(mask))


def clients_federated(paths: list[Path]) -> FederatedDataset:
    """Client files as a federation, client `i` the file whose `client_id` is `i`-th smallest
    (so seeded draws match a deployment over the same files), its label space the files'
    labels 0..max, as a deployment's server counts it (a global head fits either)."""
    loaded = sorted((load_client(path) for path in paths), key=lambda pair: pair[0])
    clients = [client for _, client in loaded]
    sizes = np.cumsum([0] + [len(c) for c in clients])
    masks = [c.query_mask for c in clients]
    query_mask = None if any(m is None for m in masks) else torch.cat(masks).numpy()
    labels = torch.cat([c.y for c in clients]).numpy()
    return ArrayFederatedDataset(
        "clients", torch.cat([c.x for c in clients]).numpy(), labels,
        [np.arange(a, b) for a, b in zip(sizes[:-1], sizes[1:])], query_mask,
        num_classes=int(labels.max()) + 1 if len(labels) else 0)
