"""Omniglot as federated few-shot clients (Lake, Salakhutdinov, Tenenbaum 2015, Science).

Meta-train clients come from the 30 'background' alphabets and meta-test clients from the 20
'evaluation' alphabets, as in Vinyals et al. 2016 / Finn et al. 2017 (MAML); optional 90-degree
rotations count as new classes (Santoro et al. 2016).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from fedmeta.data.federated import ArrayFederatedDataset, ClientData, FederatedDataset
from fedmeta.data.partition import key_partition, random_partition
from fedmeta.data.sources import resolve_dataset

_KEYS = ("alphabet", "character", "drawer", "split", "char_id")


def load_omniglot_arrays(path: str | Path) -> dict[str, np.ndarray]:
    """Load ``images`` (uint8 [N,28,28], ink 255 on 0) and the metadata arrays ``_KEYS``.

    Also accepts the compact variant storing ``bits`` = np.packbits(images > 127, axis=-1)
    [N,28,4] instead of ``images``. The 105x105 originals are not loaded.
    """
    with np.load(path, allow_pickle=False) as f:
        if "images" in f.files:
            images = f["images"]
        elif "bits" in f.files:
            images = np.unpackbits(f["bits"], axis=-1, count=28) * np.uint8(255)
        else:
            raise ValueError(f"{path}: no 'images' or 'bits' array")
        missing = [k for k in _KEYS if k not in f.files]
        if missing:
            raise ValueError(f"{path}: missing arrays {', '.join(missing)}")
        return {"images": images, **{k: f[k] for k in _KEYS}}


def _rotate4(client: ClientData) -> ClientData:
    """Each example -> its 4 rotations by 90 degrees; class c -> 4c + r."""
    x = torch.stack([torch.rot90(client.x, r, dims=(-2, -1)) for r in range(4)], dim=1)
    y = client.y.unsqueeze(1) * 4 + torch.arange(4)
    return ClientData(x.flatten(0, 1), y.flatten())


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
    if partition not in ("alphabet", "drawer", "random"):
        raise ValueError(f"partition must be 'alphabet', 'drawer' or 'random', got {partition!r}")
    if (partition == "random") != (num_clients is not None):
        raise ValueError("num_clients is required for, and only for, partition='random'")
    a = load_omniglot_arrays(resolve_dataset("omniglot", path, download))
    labels = a["char_id"].astype(np.int64) - 1
    out = []
    for split in ("background", "evaluation"):
        members = np.flatnonzero(a["split"] == split)
        if partition == "random":
            chars, char_of = np.unique(labels[members], return_inverse=True)
            client_of_char = np.empty(chars.size, dtype=np.int64)
            for c, ix in enumerate(random_partition(chars.size, num_clients, seed)):
                client_of_char[ix] = c
            parts = key_partition(client_of_char[char_of.reshape(-1)])
        else:
            parts = key_partition(a[partition][members])
        out.append(ArrayFederatedDataset(
            f"omniglot-{split}", a["images"], labels, [members[p] for p in parts],
            transform=_rotate4 if rotations else None, expansion=4 if rotations else 1,
        ))
    train_classes = np.unique(labels[a["split"] == "background"])
    assert not np.intersect1d(train_classes, labels[a["split"] == "evaluation"]).size, "class overlap"
    return out[0], out[1]
