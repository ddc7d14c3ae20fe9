"""One client's data as a file of its own: what a client machine holds in a deployment.

An `.npz` with `x` (uint8 images [n, H, W] or float32 features [n, d]), `y` (int64 labels),
`client_id` (the client's index in the federation, which seeds its draws so a deployment
reproduces a simulation) and, optionally, `query_mask` (its own query split). A rating client
(a phone's user, `fedmeta.data.movielens`) holds its ratings as float32 `y`, in the order it
gave them, and `num_items`: the item space its features' column 0 indexes, the run's model's.
A speaking role (`fedmeta.data.shakespeare`) is a Shakespeare file of that one role (`text`,
`offsets`, `split_point`, `vocab`) with its `client_id`: the node draws its 80-character
windows from its text, as the simulation does from the corpus. A client of a dataset whose
held-out data are each client's own splits (Fashion-MNIST, PFLlib's protocol) holds all its
examples, with `split` (uint8: 0 trains, 1 validates, 2 tests) saying which part is which.
Loaded without pickle; every field is checked, so a bad file fails with one line naming it.
"""

from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from fedmeta.atomic import atomic_path
from fedmeta.data.federated import ArrayFederatedDataset, ClientData, FederatedDataset
from fedmeta.data.npz import check_column, data_error, described, load_npz
from fedmeta.data.shakespeare import (ROLE_ARRAYS, VOCAB, TextFederatedDataset, checked_roles,
                                      roles_federated, sample_counts)
from fedmeta.errors import UserError


class ClientFile(NamedTuple):
    """A client file's client: its id, its data (what it trains on), the label space it shows
    (its labels 0..max, 1 for ratings, LEAF's vocabulary for a role), its item space (0
    unless ratings) and, for a client of own splits, its validation and test parts."""

    client_id: int
    data: ClientData
    num_classes: int
    num_items: int
    held: tuple[ClientData, ClientData] | None = None


SPLITS = ("train", "validation", "test")  # a client's own parts, as `split` numbers them


def save_client(path: Path, client: ClientData, client_id: int, num_items: int = 0) -> None:
    """Write one client's file (to a temporary name, then renamed); `num_items`: a rating
    client's item space."""
    arrays = {"x": client.x.numpy(), "y": client.y.numpy(), "client_id": np.int64(client_id)}
    if client.query_mask is not None:
        arrays["query_mask"] = client.query_mask.numpy()
    if num_items:
        arrays["num_items"] = np.int64(num_items)
    write_client(path, arrays)


def save_own_splits(path: Path, parts: tuple[ClientData, ...], client_id: int) -> None:
    """Write a client of own splits: its training, validation and test parts (`SPLITS`)."""
    write_client(path, {"x": torch.cat([p.x for p in parts]).numpy(),
                        "y": torch.cat([p.y for p in parts]).numpy(),
                        "split": np.repeat(np.arange(len(parts), dtype=np.uint8),
                                           [len(p) for p in parts]),
                        "client_id": np.int64(client_id)})


def save_role(path: Path, roles: TextFederatedDataset, i: int, client_id: int) -> None:
    """Write role `i` of `roles` as its client's file."""
    write_client(path, {**roles.role_arrays(i), "client_id": np.int64(client_id)})


def write_client(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with atomic_path(path, ".tmp.npz") as tmp:  # numpy would add .npz to another name
        np.savez_compressed(tmp, **arrays)


def load_client(path: str | Path) -> ClientFile:
    """The client of a client file, checked."""
    arrays = load_npz(path, ("client_id",), optional=("x", "y", "query_mask", "num_items",
                                                      "split", *ROLE_ARRAYS))
    client_id = arrays["client_id"]
    if client_id.shape != () or client_id.dtype.kind not in "iu" or client_id < 0:
        raise data_error(path, f"client_id must be one non-negative integer, "
                               f"got {described(client_id)}")
    if "text" in arrays:
        return ClientFile(int(client_id), role(path, arrays), len(VOCAB), 0)
    missing = [key for key in ("x", "y") if key not in arrays]
    if missing:
        raise data_error(path, f"missing arrays {', '.join(missing)}")
    x, y = arrays["x"], arrays["y"]
    images, features = x.dtype == np.uint8 and x.ndim == 3, x.dtype == np.float32 and x.ndim >= 2
    if not (images or features) or not x.size:
        raise data_error(path, f"x must be uint8 images [n, H, W] or float32 features [n, d], "
                               f"n > 0, got {described(x)}")
    if features and not np.isfinite(x).all():
        raise data_error(path, "x has NaN or infinite values")
    num_items = rating_items(path, arrays.get("num_items"), x, features)
    check_column(path, "y", y, len(x), "f" if num_items else "iu")
    if num_items and not np.isfinite(y).all():
        raise data_error(path, "y (ratings) has NaN or infinite values")
    if y.min() < 0:
        raise data_error(path, f"y has a negative {'rating' if num_items else 'label'} "
                               f"({y.min()})")
    mask = arrays.get("query_mask")
    if mask is not None and (mask.dtype != np.bool_ or mask.shape != y.shape):
        raise data_error(path, f"query_mask must be {len(y)} booleans, got {described(mask)}")
    data = ClientData(
        torch.from_numpy(x), torch.from_numpy(y.astype(np.float32 if num_items else np.int64)),
        None if mask is None else torch.from_numpy(mask))
    if "split" in arrays:
        if num_items or mask is not None:
            raise data_error(path, "a file of own splits (split) holds no ratings (num_items) "
                                   "or query_mask")
        return own_split_file(path, int(client_id), data, arrays["split"])
    return ClientFile(int(client_id), data, label_space(data.y), num_items)


def own_split_file(path: str | Path, client_id: int, data: ClientData,
                   split: np.ndarray) -> ClientFile:
    """A client of own splits: `data` parted by `split`, checked (some examples to train on)."""
    if split.shape != data.y.shape or split.dtype != np.uint8 or split.max() >= len(SPLITS):
        raise data_error(path, f"split must be {len(data.y)} uint8 values in 0..2 (train, "
                               f"validation, test), got {described(split)}")
    if not (split == 0).any():
        raise data_error(path, "split marks no example to train on (0)")
    train, validation, test = (ClientData(data.x[split == part], data.y[split == part])
                               for part in range(len(SPLITS)))
    return ClientFile(client_id, train, label_space(data.y), 0, (validation, test))


def role(path: str | Path, arrays: dict[str, np.ndarray]) -> ClientData:
    """A role file's client: one role with a support and a query sample at least."""
    missing = [key for key in ROLE_ARRAYS if key not in arrays]
    if missing:
        raise data_error(path, f"missing arrays {', '.join(missing)} (a role's text has them)")
    tokens, bounds = checked_roles(path, arrays)
    support, query = sample_counts(bounds)
    if len(bounds) != 1 or support[0] < 1 or query[0] < 1:
        raise data_error(path, "a role's file holds one role with a support and a query "
                               "sample (over 80 characters before its split point)")
    return TextFederatedDataset(str(path), torch.from_numpy(tokens), bounds).client(0)


def rating_items(path: str | Path, num_items: np.ndarray | None, x: np.ndarray,
                 features: bool) -> int:
    """A rating client's item space (0: not a rating client), checked against the items its
    features' column 0 indexes."""
    if num_items is None:
        return 0
    if num_items.shape != () or num_items.dtype.kind not in "iu" or num_items < 1:
        raise data_error(path, f"num_items must be one positive integer, got "
                               f"{described(num_items)}")
    items = x[:, 0] if features and x.ndim == 2 else None
    if items is None or (items != np.round(items)).any() or not (
            0 <= items.min() and items.max() < num_items):
        raise data_error(path, f"a rating client's x must be float32 features [n, d] whose "
                               f"column 0 is an item index in [0, {int(num_items)})")
    return int(num_items)


def label_space(y: torch.Tensor) -> int:
    """The label space a client file's targets show: its labels 0..max, 1 for ratings (one
    output), as a deployment's server counts it."""
    return 1 if y.is_floating_point() else int(y.max()) + 1 if len(y) else 0


def clients_federated(paths: list[Path]) -> FederatedDataset:
    """Client files as a federation, client `i` the file whose `client_id` is `i`-th smallest
    (so seeded draws match a deployment over the same files), its label space the files'
    labels 0..max, as a deployment's server counts it (a global head fits either); rating
    clients' files must share one item space; role files form their roles' corpus."""
    loaded = sorted((load_client(path) for path in paths), key=lambda file: file.client_id)
    clients = [file.data for file in loaded]
    roles = [file.data.x.dtype == torch.int64 for file in loaded]  # windows of a text
    if any(roles):
        if not all(roles):
            raise UserError("data error: the client files mix roles' text with examples")
        return roles_federated("clients", clients)
    items = {file.num_items for file in loaded}
    if len(items) > 1:
        raise UserError(f"data error: the client files index different item spaces "
                        f"(num_items {sorted(items)})")
    sizes = np.cumsum([0] + [len(c) for c in clients])
    masks = [c.query_mask for c in clients]
    query_mask = None if any(m is None for m in masks) else torch.cat(masks).numpy()
    labels = torch.cat([c.y for c in clients])
    return ArrayFederatedDataset(
        "clients", torch.cat([c.x for c in clients]).numpy(), labels.numpy(),
        [np.arange(a, b) for a, b in zip(sizes[:-1], sizes[1:])], query_mask,
        num_classes=label_space(labels), num_items=items.pop() if items else 0)
