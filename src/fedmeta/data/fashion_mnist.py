"""Fashion-MNIST (Xiao, Rasul, Vollgraf 2017; MIT license): 70,000 28x28 grayscale images of
10 clothing classes, read from its four IDX files (gzipped or not), and split into clients as
PFLlib builds its personalized-FL benchmark: label skew by Dirichlet(beta) or pathological
(a few classes a client), each client's own examples split 75/25 into its train and test
parts (its support and query: `ClientData.query_mask`).

The files are found, in order: the directory `path`; `$FEDMETA_DATA/fashion-mnist`; the one
Debian's `dataset-fashion-mnist` package installs; the cache; else, with `download`, the
official mirror. Their decompressed contents are checked against SHA-256 digests measured on
Debian's package (the official gzip files' own md5s change with recompression).
"""

import gzip
import hashlib
import math
import os
import zlib
from pathlib import Path

import numpy as np

from fedmeta.data.federated import ArrayFederatedDataset
from fedmeta.data.partition import capped_dirichlet_partition, class_partition
from fedmeta.data.sources import DatasetNotFound, cache_dir, fetch
from fedmeta.errors import UserError

NAME = "fashion-mnist"
DEBIAN = Path("/usr/share/datasets/fashion-mnist")
URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
# file -> SHA-256 of its decompressed IDX bytes
FILES = {
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
CLASSES = 10


def read_idx(path: Path) -> np.ndarray:
    """An IDX file of unsigned bytes (LeCun's MNIST format: magic 0x0000 08 `dims`, the
    dimensions as big-endian int32, then the values), gzipped or not; UserError if it is not
    one."""
    return parse_idx(idx_bytes(path), path)


def idx_bytes(path: Path) -> bytes:
    """The file's bytes, decompressed if it is gzipped."""
    try:
        raw = path.read_bytes()
        return gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
    except (OSError, EOFError, zlib.error) as error:  # gzip.BadGzipFile is an OSError
        raise UserError(f"data error: {path}: cannot read ({error})") from None


def parse_idx(data: bytes, path: Path) -> np.ndarray:
    """The array an IDX file's bytes `data` (read from `path`) hold, without a copy."""
    if len(data) < 4 or data[:3] != b"\x00\x00\x08" or not 1 <= data[3] <= 3:
        raise UserError(f"data error: {path}: not an IDX file of unsigned bytes")
    dims = data[3]
    header = 4 + 4 * dims
    shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(dims))
    if len(data) != header + int(np.prod(shape)):
        raise UserError(f"data error: {path}: {len(data) - header} values for a shape {shape}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def locate(path: str | Path | None, download: bool) -> dict[str, Path]:
    """Each of the four files, gzipped or not, from the first place that has them all."""
    if path is not None:
        places = [Path(path).expanduser()]
    else:
        places = [DEBIAN, cache_dir() / NAME]
        if "FEDMETA_DATA" in os.environ:
            places.insert(0, Path(os.environ["FEDMETA_DATA"]) / NAME)
    for place in places:
        found = {name: next((place / f for f in (name + ".gz", name) if (place / f).is_file()),
                            None) for name in FILES}
        if all(found.values()):
            return found
    if path is not None:
        raise DatasetNotFound(f"{NAME}: {path} does not hold {', '.join(FILES)} (.gz or not)")
    if not download:
        raise DatasetNotFound(f"{NAME} not found in {', '.join(map(str, places))}: install "
                              f"Debian's dataset-fashion-mnist, pass path=..., or download")
    return {name: fetch(URL + name + ".gz", cache_dir() / NAME / (name + ".gz"), md5=None)
            for name in FILES}


def load_fashion_mnist(path: str | Path | None = None,
                       download: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """All 70,000 images (uint8 [N, 28, 28], training then test set) and labels (int64 [N]),
    checked against their digests; UserError if they do not match."""
    files = locate(path, download)
    arrays = {}
    for name, digest in FILES.items():
        data = idx_bytes(files[name])
        if hashlib.sha256(data).hexdigest() != digest:
            if files[name].is_relative_to(cache_dir() / NAME):  # a bad download: fetch again
                files[name].unlink()
            raise UserError(f"data error: {files[name]}: its contents differ from "
                            f"Fashion-MNIST's {name}")
        arrays[name] = parse_idx(data, files[name])
    images = np.concatenate([arrays["train-images-idx3-ubyte"], arrays["t10k-images-idx3-ubyte"]])
    labels = np.concatenate([arrays["train-labels-idx1-ubyte"], arrays["t10k-labels-idx1-ubyte"]])
    return images, labels.astype(np.int64)


def fashion_mnist_federated(images: np.ndarray, labels: np.ndarray, num_clients: int = 20,
                            partition: str = "dirichlet", beta: float = 0.1,
                            classes_per_client: int = 2, train_fraction: float = 0.75,
                            seed: int = 0, balanced: bool = True) -> ArrayFederatedDataset:
    """`num_clients` clients of `images`, `labels` by label skew, as PFLlib's generator makes
    them: "dirichlet", each class split over the clients that hold under their share so far
    by proportions ~ Dir(`beta`) (`capped_dirichlet_partition`), redrawn until every client
    has at least 40 examples (PFLlib: batch size 10 / (1 - 0.75)); or "pathological",
    `classes_per_client` classes each (`class_partition`: in near-equal parts if `balanced`,
    else in PFLlib's unbalanced amounts). Each client's examples, shuffled, are its train
    part (the first `train_fraction`) and its test part, its query (`query_mask`)."""
    if partition == "dirichlet":
        least = math.ceil(round(10 / (1 - train_fraction), 9))
        clients = capped_dirichlet_partition(labels, num_clients, beta, seed, min_size=least)
    elif partition == "pathological":
        clients = class_partition(labels, num_clients, classes_per_client, seed, balanced)
    else:
        raise ValueError(f"partition must be 'dirichlet' or 'pathological', got {partition!r}")
    rng = np.random.default_rng([seed, 1])
    query = np.zeros(len(labels), dtype=bool)
    for indices in clients:
        order = rng.permutation(indices)
        query[order[int(round(train_fraction * len(order))):]] = True
    return ArrayFederatedDataset(NAME, images, labels, clients, query_mask=query,
                                 num_classes=CLASSES)
