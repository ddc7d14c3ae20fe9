"""Locating dataset files: explicit path, ``$FEDMETA_DATA``, the cache, or an official download.

Omniglot (Lake, Salakhutdinov, Tenenbaum 2015) comes from brendenlake/omniglot's zips, checked
against their published md5 and converted to our npz format; FEMNIST (LEAF, Caldas et al. 2018)
has no single download file and is converted from LEAF's preprocessed json; Shakespeare (LEAF)
is built from Project Gutenberg's complete works.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
import urllib.request
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedmeta.atomic import atomic_path
from fedmeta.errors import UserError

FEMNIST_CLASSES = 62  # digits, upper- and lower-case letters
_OMNIGLOT_URL = "https://github.com/brendenlake/omniglot/raw/master/python/"
_LEAF_HOWTO = (
    "FEMNIST has no single download file: run LEAF's preprocessing (git clone "
    "https://github.com/TalwalkarLab/leaf && cd leaf/data/femnist && ./preprocess.sh -s niid "
    "--sf 0.05 -k 0 -t sample) and pass path=leaf/data/femnist/data (or its all_data directory)"
)

_SHAKESPEARE_HOWTO = (
    "Shakespeare has no download file: build shakespeare.npz (the format of "
    "fedmeta.data.shakespeare: roles' texts, offsets, split points, LEAF's vocabulary) from "
    "Project Gutenberg's eBook #100, https://www.gutenberg.org/ebooks/100"
)


_MOVIELENS_HOWTO = (
    "MovieLens is not downloaded by fedmeta (GroupLens' license: research use only, no "
    "commercial use): build movielens.npz from ml-latest-small.zip "
    "(https://grouplens.org/datasets/movielens/) in the format of "
    "shared/data/PROVENANCE_movielens.md"
)


class DatasetNotFound(UserError, FileNotFoundError):
    """A dataset file could not be located (message says where to put it / how to get it)."""


class ChecksumError(UserError, ValueError):
    """A downloaded file does not match its published checksum."""


@dataclass(frozen=True)
class Source:
    url: str
    md5: str


@dataclass(frozen=True)
class DatasetSpec:
    """``file``: our npz name; ``sha256``: the reference npz (SHA256SUMS); ``sources``: downloads."""

    file: str
    sha256: str
    sources: tuple[Source, ...] = ()
    howto: str = ""


DATASETS: dict[str, DatasetSpec] = {
    "omniglot": DatasetSpec(
        "omniglot.npz",
        "4024f4b55e35dbf8f51e2e0ae16f4af025f44e899f0b28e9f9e8b73a978f5163",
        (
            Source(_OMNIGLOT_URL + "images_background.zip", "68d2efa1b9178cc56df9314c21c6e718"),
            Source(_OMNIGLOT_URL + "images_evaluation.zip", "6b91aef0f799c5bb55b94e3f2daec811"),
        ),
    ),
    "femnist": DatasetSpec(
        "femnist.npz", "77cc9df1db8ef809c0f31f174806995c451e5e1fefcd552db6a4a1ee25cc1381", howto=_LEAF_HOWTO
    ),
    "shakespeare": DatasetSpec(
        "shakespeare.npz", "ced758d118da65dbb3526d9f7c1bedc8d34bf6ffe88fc527bfa5e33f79efc819",
        howto=_SHAKESPEARE_HOWTO,
    ),
    "movielens": DatasetSpec(
        "movielens.npz", "d0e3219b69257ac1cd104e249f149b66a477488841aacf199056e062be1c5b0c",
        howto=_MOVIELENS_HOWTO,
    ),
}


def cache_dir() -> Path:
    """Where downloads and conversions go: ``$FEDMETA_DATA`` or ``~/.cache/fedmeta``."""
    return Path(os.environ.get("FEDMETA_DATA") or Path.home() / ".cache" / "fedmeta")


def file_digest(path: str | Path, algorithm: str = "sha256") -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def is_reference_file(name: str, path: str | Path) -> bool:
    """Whether ``path`` is byte-identical to the reference npz recorded for ``name``."""
    return file_digest(path) == _spec(name).sha256


def resolve_dataset(name: str, path: str | Path | None = None, download: bool = False) -> Path:
    """Path of dataset ``name``'s npz file, downloading/converting it into the cache if asked.

    ``path`` may be the npz itself, a directory holding it, or (FEMNIST) a LEAF data directory,
    which is converted once into the cache.
    """
    spec = _spec(name)
    if path is not None:
        p = Path(path).expanduser()
        if p.is_file():
            return p
        if p.is_dir() and (p / spec.file).is_file():
            return p / spec.file
        if p.is_dir() and name == "femnist":
            dest = cache_dir() / f"femnist-leaf-{hashlib.sha1(str(p.resolve()).encode()).hexdigest()[:8]}.npz"
            return dest if dest.is_file() else convert_leaf_femnist(p, dest)
        raise DatasetNotFound(f"{name}: {p} does not exist or holds no {spec.file}")
    for d in (cache_dir(), Path.home() / ".cache" / "fedmeta"):
        if (d / spec.file).is_file():
            return d / spec.file
    where = f"put {spec.file} in {cache_dir()} (or set FEDMETA_DATA, or pass path=...)"
    if not spec.sources:
        raise DatasetNotFound(f"{name} not found: {where}; {spec.howto}")
    if not download:
        raise DatasetNotFound(f"{name} not found: {where}, or pass download=True to fetch {spec.sources[0].url}")
    zips = [fetch(s.url, cache_dir() / s.url.rsplit("/", 1)[-1], s.md5) for s in spec.sources]
    return convert_omniglot_zips(zips, cache_dir() / spec.file)


def fetch(url: str, dest: Path, md5: str | None) -> Path:
    """Download ``url`` to ``dest`` atomically unless a file with the right md5 is already there
    (``md5`` None: any file there; the caller checks the contents)."""
    if dest.is_file() and (md5 is None or file_digest(dest, "md5") == md5):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    h = hashlib.md5()
    with atomic_path(dest, ".part") as tmp:
        with urllib.request.urlopen(url) as r, open(tmp, "wb") as f:
            for block in iter(lambda: r.read(1 << 20), b""):
                h.update(block)
                f.write(block)
        if md5 is not None and h.hexdigest() != md5:
            raise ChecksumError(f"checksum mismatch for {url}: md5 {h.hexdigest()}, expected {md5}")
    return dest


def save_npz_atomic(dest: Path, **arrays: np.ndarray) -> Path:
    """Write a compressed npz via a temporary file and ``os.replace`` (no partial files)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(dest) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)
    return dest


_OMNIGLOT_PNG = re.compile(r"images_(background|evaluation)/([^/]+)/character(\d+)/\d+_(\d+)\.png$")


def convert_omniglot_zips(zips: Sequence[Path], dest: Path) -> Path:
    """brendenlake/omniglot zips -> our npz (ink 255 on 0; 28x28 by Lanczos from 105x105).

    ``char_id`` numbers characters 1.. in (background first, alphabet, character) sorted order.
    """
    Image = _pillow()
    entries = []
    for z in zips:
        with zipfile.ZipFile(z) as zf:
            for info in zf.infolist():
                m = _OMNIGLOT_PNG.search(info.filename)
                if m:
                    split, alphabet, char, drawer = m.groups()
                    key = (split != "background", alphabet, int(char), int(drawer))
                    png = Image.open(io.BytesIO(zf.read(info))).convert("L")
                    entries.append((key, split, 255 - np.asarray(png, dtype=np.uint8)))
    if not entries:
        raise ValueError(f"no Omniglot PNGs found in {', '.join(map(str, zips))}")
    entries.sort(key=lambda e: e[0])
    big = np.stack([e[2] for e in entries])
    small = lanczos_28(big)
    keys = [e[0] for e in entries]
    chars = [k[:3] for k in keys]
    char_id = np.cumsum([i == 0 or chars[i] != chars[i - 1] for i in range(len(chars))])
    return save_npz_atomic(
        dest,
        images=small,
        images_105=big,
        alphabet=np.array([k[1] for k in keys]),
        character=np.array([k[2] for k in keys], dtype=np.int16),
        drawer=np.array([k[3] for k in keys], dtype=np.int8),
        split=np.array([e[1] for e in entries]),
        char_id=char_id.astype(np.int16),
    )


def lanczos_28(images: np.ndarray) -> np.ndarray:
    """uint8 [N, H, W] -> [N, 28, 28] by Pillow's Lanczos resampling (reproduces omniglot.npz)."""
    Image = _pillow()
    return np.stack([np.asarray(Image.fromarray(im).resize((28, 28), Image.LANCZOS)) for im in images])


def _pillow():
    try:
        from PIL import Image
    except ImportError:
        raise ImportError("converting Omniglot PNGs needs Pillow: pip install pillow") from None
    return Image


def convert_leaf_femnist(leaf_dir: Path, dest: Path) -> Path:
    """LEAF FEMNIST json (x: 784 floats, 1.0 = white) -> our npz (ink = round((1 - x) * 255)).

    ``leaf_dir`` is LEAF's ``data`` directory with ``train/`` and ``test/`` (giving ``leaf_split``
    0/1) or a directory of json files such as ``all_data`` (all ``leaf_split`` 0).
    """
    leaf_dir = Path(leaf_dir)
    if (leaf_dir / "train").is_dir() and (leaf_dir / "test").is_dir():
        files = [(f, s) for s, sub in enumerate(("train", "test")) for f in sorted((leaf_dir / sub).glob("*.json"))]
    else:
        files = [(f, 0) for f in sorted(leaf_dir.glob("*.json"))]
    if not files:
        raise DatasetNotFound(f"no LEAF json files in {leaf_dir}; {_LEAF_HOWTO}")
    xs, ys, users, splits = [], [], [], []
    for f, s in files:
        try:
            data = json.loads(f.read_text(encoding="utf-8"))
            examples = [(user, *leaf_examples(data["user_data"][user])) for user in data["users"]]
        except (OSError, ValueError, KeyError, TypeError, RecursionError) as error:
            raise UserError(f"data error: {f}: not LEAF FEMNIST json "
                            f"({type(error).__name__}: {error})") from None
        for user, x, y in examples:
            xs.append(x)
            ys.append(y)
            users.append(np.full(len(y), user))
            splits.append(np.full(len(y), s, dtype=np.int8))
    if not sum(map(len, ys)):
        raise UserError(f"data error: {leaf_dir}: its LEAF json files hold no examples")
    writer_id = np.concatenate(users)
    writer_names, writer = np.unique(writer_id, return_inverse=True)
    return save_npz_atomic(
        dest,
        images=np.round((1.0 - np.concatenate(xs)) * 255).clip(0, 255).astype(np.uint8),
        labels=np.concatenate(ys),
        writer=writer.reshape(-1).astype(np.int32),
        writer_id=writer_id,
        leaf_split=np.concatenate(splits),
        writer_names=writer_names,
    )


def leaf_examples(user_data: dict) -> tuple[np.ndarray, np.ndarray]:
    """One LEAF user's images [n, 28, 28] (finite, 1.0 = white) and labels [n] in 0..61."""
    with np.errstate(over="ignore"):  # a pixel beyond float32 becomes inf, refused below
        x = np.asarray(user_data["x"], dtype=np.float32).reshape(-1, 28, 28)
    y = np.asarray(user_data["y"])
    if not np.isfinite(x).all() or y.dtype.kind not in "iu" or y.shape != (len(x),) or (
            y.size and not 0 <= y.min() <= y.max() < FEMNIST_CLASSES):
        raise ValueError(f"a user's x must be finite pixels and y {len(x)} labels in "
                         f"0..{FEMNIST_CLASSES - 1}")
    return x, y.astype(np.int16)


def _spec(name: str) -> DatasetSpec:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(sorted(DATASETS))}")
    return DATASETS[name]
