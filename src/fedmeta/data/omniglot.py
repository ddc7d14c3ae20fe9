"""Omniglot as federated few-shot clients (Lake, Salakhutdinov, Tenenbaum 2015, Science).

Meta-train clients come from the 30 'background' alphabets and meta-test clients from the 20
'evaluation' alphabets, as in Vinyals et al. 2016 / Finn et al. 2017 (MAML); optional 90-degree
rotations count as new classes (Santoro et al. 2016).
"""
from __future__ import annotations

import reprlib
from pathlib import Path

import numpy as np
import torch

from fedmeta.data.federated import ArrayFederatedDataset, ClientData, FederatedDataset
from fedmeta.data.npz import IMAGE_SIDE, check_column, check_images, data_error, described, load_npz
from fedmeta.data.partition import key_partition, random_partition
from fedmeta.data.sources import resolve_dataset

_KEYS = ("alphabet", "character", "drawer", "split", "char_id")


def load_omniglot_arrays(path: str | Path, both_splits: bool = True) -> dict[str, np.ndarray]:
    """Load ``images`` (uint8 [N,28,28], ink 255 on 0) and the metadata arrays ``_KEYS``, all
    checked: ``split`` is 'background' or 'evaluation' (both present unless not
    ``both_splits``) and ``char_id`` numbers the characters 1..K, background first.

    Also accepts the compact variant storing ``bits`` = np.packbits(images > 127, axis=-1)
    [N,28,4] instead of ``images``. The 105x105 originals are not loaded.
    """
    a = load_npz(path, _KEYS, optional=("images", "bits"))
    if "images" in a:
        images = a["images"]
    elif "bits" in a:
        if a["bits"].dtype != np.uint8 or a["bits"].shape[1:] != (IMAGE_SIDE, 4):
            raise data_error(path, f"bits must be uint8 [N, {IMAGE_SIDE}, 4], "
                                   f"got {described(a['bits'])}")
        images = np.unpackbits(a["bits"], axis=-1, count=IMAGE_SIDE) * np.uint8(255)
    else:
        raise data_error(path, "no 'images' or 'bits' array")
    check_images(path, images)
    for key in ("alphabet", "character", "drawer"):
        check_column(path, key, a[key], len(images), "iuU")
    check_column(path, "split", a["split"], len(images), "U")
    check_column(path, "char_id", a["char_id"], len(images), "iu")
    split, char_id = a["split"], a["char_id"]
    unknown = sorted(set(np.unique(split)) - {"background", "evaluation"})
    if unknown:
        raise data_error(path, f"split must be 'background' or 'evaluation', "
                               f"got {reprlib.repr(unknown[0])}")
    background, evaluation = char_id[split == "background"], char_id[split == "evaluation"]
    if both_splits and (not background.size or not evaluation.size):
        raise data_error(path, "needs both 'background' (training) and 'evaluation' "
                               "(held-out) examples")
    ids = np.unique(char_id)
    if not np.array_equal(ids, np.arange(1, ids.size + 1)) or (
            background.size and evaluation.size and background.max() >= evaluation.min()):
        raise data_error(path, "char_id must number the characters 1..K, background first")
    return {"images": images, **{k: a[k] for k in _KEYS}}


def _rotate4(client: ClientData) -> ClientData:
    """Each example -> its 4 rotations by 90 degrees; class c -> 4c + r."""
    x = torch.stack([torch.rot90(client.x, r, dims=(-2, -1)) for r in range(4)], dim=1)
    y = client.y.unsqueeze(1) * 4 + torch.arange(4)
    return ClientData(x.flatten(0, 1), y.flatten())


def check_partition(partition: str, num_clients: int | None) -> None:
    """ValueError unless `partition` names one of Omniglot's partitions, with `num_clients`
    exactly where it needs one."""
    if partition not in ("alphabet", "drawer", "random"):
        raise ValueError(f"partition must be 'alphabet', 'drawer' or 'random', got {partition!r}")
    if (partition == "random") != (num_clients is not None):
        raise ValueError("num_clients is required for, and only for, partition='random'")


def partitioned(name: str, a: dict[str, np.ndarray], members: np.ndarray, partition: str,
                num_clients: int | None, rotations: bool, seed: int) -> ArrayFederatedDataset:
    """The examples `members` of Omniglot arrays `a` as clients by `partition`, labelled
    char_id - 1 (4 * (char_id - 1) + r with `rotations`)."""
    labels = a["char_id"].astype(np.int64) - 1
    if partition == "random":
        chars, char_of = np.unique(labels[members], return_inverse=True)
        client_of_char = np.empty(chars.size, dtype=np.int64)
        for c, ix in enumerate(random_partition(chars.size, num_clients, seed)):
            client_of_char[ix] = c
        parts = key_partition(client_of_char[char_of.reshape(-1)])
    else:
        parts = key_partition(a[partition][members])
    return ArrayFederatedDataset(name, a["images"], labels, [members[p] for p in parts],
                                 transform=_rotate4 if rotations else None,
                                 expansion=4 if rotations else 1)


def omniglot_federated(
    path: str | Path | None = None,
    partition: str = "alphabet",
    num_clients: int | None = None,
    rotations: bool = False,
    seed: int = 0,
    download: bool = False,
) -> tuple[FederatedDataset, FederatedDataset]:
    """(meta-train clients from 'background', meta-test clients from 'evaluation').

    ``partition``: 'alphabet' (one client per alphabet), 'drawer' (one client per drawer, one
    example per class), or 'random' (whole characters dealt to ``num_clients`` clients).
    Global label = char_id - 1 (0-based; 4 * (char_id - 1) + r with ``rotations``).
    """
    check_partition(partition, num_clients)
    a = load_omniglot_arrays(resolve_dataset("omniglot", path, download))
    return tuple(partitioned(f"omniglot-{split}", a, np.flatnonzero(a["split"] == split),
                             partition, num_clients, rotations, seed)
                 for split in ("background", "evaluation"))


def omniglot_clients(path: str | Path, partition: str = "alphabet",
                     num_clients: int | None = None, rotations: bool = False,
                     seed: int = 0) -> ArrayFederatedDataset:
    """Every client of an Omniglot file, whatever its `split` says (a file of new alphabets
    may hold only 'evaluation' ones), partitioned and rotated as `omniglot_federated` does:
    new clients for a trained run."""
    check_partition(partition, num_clients)
    a = load_omniglot_arrays(resolve_dataset("omniglot", path), both_splits=False)
    return partitioned("omniglot", a, np.arange(len(a["images"])), partition, num_clients,
                       rotations, seed)
