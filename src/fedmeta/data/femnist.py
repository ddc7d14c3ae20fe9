"""FEMNIST from LEAF (Caldas et al. 2018, arXiv:1812.01097): one client per writer, 62 classes.

Writers are split disjointly into meta-train and meta-test clients; each client keeps LEAF's own
per-writer train/test split as its ``query_mask``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from fedmeta.data.federated import ArrayFederatedDataset, FederatedDataset
from fedmeta.data.npz import check_column, check_images, check_range, data_error, load_npz
from fedmeta.data.partition import key_partition
from fedmeta.data.sources import FEMNIST_CLASSES, resolve_dataset


def femnist_federated(
    path: str | Path | None = None, test_fraction: float = 0.2, seed: int = 0, download: bool = False
) -> tuple[FederatedDataset, FederatedDataset]:
    """(train clients, test clients): writers split at random by ``seed``, ``test_fraction`` to test."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    path = resolve_dataset("femnist", path, download)
    a = load_npz(path, ("images", "labels", "writer", "leaf_split"))
    images, labels, writer, leaf_split = a["images"], a["labels"], a["writer"], a["leaf_split"]
    check_images(path, images)
    check_column(path, "labels", labels, len(images), "iu")
    check_range(path, "labels", labels, 0, FEMNIST_CLASSES)
    check_column(path, "writer", writer, len(images), "iuU")
    check_column(path, "leaf_split", leaf_split, len(images), "iu")
    check_range(path, "leaf_split", leaf_split, 0, 2)
    clients = key_partition(writer)
    n_test = int(round(test_fraction * len(clients)))
    if not 0 < n_test < len(clients):
        raise data_error(path, f"{len(clients)} writers cannot be split into training and "
                               f"held-out clients at test_fraction {test_fraction}")
    perm = np.random.default_rng(seed).permutation(len(clients))
    mask = leaf_split == 1 if (leaf_split == 1).any() else None
    return tuple(
        ArrayFederatedDataset(
            f"femnist-{side}", images, labels, [clients[i] for i in np.sort(ids)], mask, num_classes=FEMNIST_CLASSES
        )
        for side, ids in (("train", perm[n_test:]), ("test", perm[:n_test]))
    )
