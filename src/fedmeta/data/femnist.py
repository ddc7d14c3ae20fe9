"""FEMNIST from LEAF (Caldas et al. 2018, arXiv:1812.01097): one client per writer, 62 classes.

Writers are split disjointly into meta-train and meta-test clients; each client keeps LEAF's own
per-writer train/test split as its ``query_mask``.
"""
from __future__ import annotations

from pathlib import Path

from fedmeta.data.federated import ArrayFederatedDataset, FederatedDataset
from fedmeta.data.npz import check_column, check_images, check_range, load_npz
from fedmeta.data.partition import key_partition
from fedmeta.data.sources import FEMNIST_CLASSES, resolve_dataset
from fedmeta.data.validation import hold_out_test


def femnist_writers(path: str | Path | None = None,
                    download: bool = False) -> ArrayFederatedDataset:
    """Every writer of a FEMNIST file as a client, each with LEAF's own train/test split."""
    path = resolve_dataset("femnist", path, download)
    a = load_npz(path, ("images", "labels", "writer", "leaf_split"))
    images, labels, writer, leaf_split = a["images"], a["labels"], a["writer"], a["leaf_split"]
    check_images(path, images)
    check_column(path, "labels", labels, len(images), "iu")
    check_range(path, "labels", labels, 0, FEMNIST_CLASSES)
    check_column(path, "writer", writer, len(images), "iuU")
    check_column(path, "leaf_split", leaf_split, len(images), "iu")
    check_range(path, "leaf_split", leaf_split, 0, 2)
    mask = leaf_split == 1 if (leaf_split == 1).any() else None
    return ArrayFederatedDataset("femnist", images, labels, key_partition(writer), mask,
                                 num_classes=FEMNIST_CLASSES)


def femnist_federated(
    path: str | Path | None = None, test_fraction: float = 0.2, seed: int = 0, download: bool = False
) -> tuple[FederatedDataset, FederatedDataset]:
    """(train clients, test clients): writers split at random by ``seed``, ``test_fraction`` to test."""
    path = resolve_dataset("femnist", path, download)
    return hold_out_test(femnist_writers(path), test_fraction, seed, path, "writers")
