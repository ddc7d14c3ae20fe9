"""FEMNIST from LEAF (Caldas et al. 2018, arXiv:1812.01097): one client per writer, 62 classes.

Writers are split disjointly into meta-train and meta-test clients; each client keeps LEAF's own
per-writer train/test split as its ``query_mask``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from fedmeta.data.federated import ArrayFederatedDataset, FederatedDataset
from fedmeta.data.partition import key_partition
from fedmeta.data.sources import resolve_dataset

NUM_CLASSES = 62


def femnist_federated(
    path: str | Path | None = None, test_fraction: float = 0.2, seed: int = 0, download: bool = False
) -> tuple[FederatedDataset, FederatedDataset]:
    """(train clients, test clients): writers split at random by ``seed``, ``test_fraction`` to test."""
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
    with np.load(resolve_dataset("femnist", path, download), allow_pickle=False) as f:
        images, labels, writer, leaf_split = f["images"], f["labels"], f["writer"], f["leaf_split"]
    clients = key_partition(writer)
    perm = np.random.default_rng(seed).permutation(len(clients))
    n_test = int(round(test_fraction * len(clients)))
    mask = leaf_split == 1 if (leaf_split == 1).any() else None
    return tuple(
        ArrayFederatedDataset(
            f"femnist-{side}", images, labels, [clients[i] for i in np.sort(ids)], mask, num_classes=NUM_CLASSES
        )
        for side, ids in (("train", perm[n_test:]), ("test", perm[:n_test]))
    )
