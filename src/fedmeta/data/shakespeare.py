"""Shakespeare from LEAF (Caldas et al. 2018, arXiv:1812.01097): one client per speaking role
of a play, next-character prediction from the 80 characters before it, as in FedMeta's text
experiments (Chen et al. 2018, arXiv:1802.07876).

A role's samples are LEAF's: its text with newlines as spaces, `x = s[j:j+80]`, `y = s[j+80]`,
characters as indices into LEAF's 80-character vocabulary. They are never stored: a client's
inputs are a strided view of the corpus (`Tensor.unfold`), so drawing a batch gathers only its
windows. Each role's own split (the file's `split_point`, LEAF's by lines) makes a sample a
query sample when its target lies in the role's last part, so the query continues the support
text, whose characters it may read as context but never predicts.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from fedmeta.data.federated import ClientData, FederatedDataset
from fedmeta.data.npz import data_error, described, load_npz
from fedmeta.data.sources import resolve_dataset
from fedmeta.data.validation import hold_out_test

# LEAF's ALL_LETTERS (leaf/models/utils/language_utils.py); LEAF feeds "\n" as a space
VOCAB = "\n !\"&'(),-.0123456789:;>?ABCDEFGHIJKLMNOPQRSTUVWXYZ[]abcdefghijklmnopqrstuvwxyz}"
WINDOW = 80  # characters a prediction reads


def tokens_of(text: np.ndarray) -> np.ndarray | None:
    """ASCII bytes [n] -> int64 vocabulary indices [n], newlines read as spaces (None: a byte
    outside the vocabulary)."""
    table = np.full(256, -1, np.int64)
    table[np.frombuffer(VOCAB.encode("ascii"), np.uint8)] = np.arange(len(VOCAB))
    table[ord("\n")] = table[ord(" ")]
    tokens = table[text]
    return None if (tokens < 0).any() else tokens


class TextFederatedDataset(FederatedDataset):
    """Clients as character ranges `[start, end)` of one token array, each with its own
    `split` (absolute: samples whose target lies at or after it are query samples)."""

    def __init__(self, name: str, tokens: torch.Tensor, bounds: np.ndarray) -> None:
        self.name = name
        self._tokens = tokens
        self._bounds = bounds  # int64 [C, 3]: start, split, end

    @property
    def num_clients(self) -> int:
        return len(self._bounds)

    def client_size(self, i: int) -> int:
        start, _, end = self._bounds[self._check_index(i)]
        return int(end - start - WINDOW)

    def client(self, i: int) -> ClientData:
        """Inputs int64 [n, 80] (a view of the corpus), targets [n], query mask [n]."""
        start, split, end = (int(b) for b in self._bounds[self._check_index(i)])
        x = self._tokens[start:end - 1].unfold(0, WINDOW, 1)
        targets = torch.arange(start + WINDOW, end)
        return ClientData(x, self._tokens[start + WINDOW:end], targets >= split)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (WINDOW,)

    @property
    def num_classes(self) -> int:
        return len(VOCAB)

    def role_arrays(self, i: int) -> dict[str, np.ndarray]:
        """Role `i` alone as a Shakespeare file's arrays (newlines read as spaces), the file a
        deployed node of that role holds (`fedmeta.data.client_files`)."""
        start, split, end = (int(b) for b in self._bounds[self._check_index(i)])
        ascii_of = np.frombuffer(VOCAB.encode("ascii"), np.uint8)
        return {"text": ascii_of[self._tokens[start:end].numpy()],
                "offsets": np.array([0, end - start]), "split_point": np.array([split - start]),
                "vocab": np.array([VOCAB])}

    def subset(self, name: str, clients: Sequence[int]) -> TextFederatedDataset:
        """The clients at positions `clients`, in that order, over the same corpus."""
        return TextFederatedDataset(name, self._tokens, self._bounds[list(clients)])


ROLE_ARRAYS = ("text", "offsets", "split_point", "vocab")  # a Shakespeare file's


def read_roles(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(tokens [N], bounds [C, 3]: each role's start, split and end) of a Shakespeare npz,
    validated: one line naming the file for any fault."""
    return checked_roles(path, load_npz(path, ROLE_ARRAYS))


def checked_roles(path: str | Path, a: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """`read_roles` of the arrays `a` read from `path`."""
    text, offsets, split, vocab = a["text"], a["offsets"], a["split_point"], a["vocab"]
    if vocab.shape != (1,) or vocab.dtype.kind != "U" or vocab[0] != VOCAB:
        raise data_error(path, f"vocab must be LEAF's 80 characters, one string, got "
                               f"{described(vocab)}")
    if text.dtype != np.uint8 or text.ndim != 1:
        raise data_error(path, f"text must be uint8 [N] (ASCII bytes), got {described(text)}")
    if offsets.dtype.kind not in "iu" or offsets.ndim != 1 or len(offsets) < 2:
        raise data_error(path, f"offsets must be integers [C + 1] for C >= 1 roles, got "
                               f"{described(offsets)}")
    if offsets[0] != 0 or offsets[-1] != len(text) or (np.diff(offsets) <= 0).any():
        raise data_error(path, f"offsets must rise from 0 to the text's length {len(text)}")
    if split.dtype.kind not in "iu" or split.shape != (len(offsets) - 1,):
        raise data_error(path, f"split_point must be {len(offsets) - 1} integers (one per "
                               f"role), got {described(split)}")
    starts, ends = offsets[:-1].astype(np.int64), offsets[1:].astype(np.int64)
    if ((split <= 0) | (split >= ends - starts)).any():
        raise data_error(path, "split_point must leave every role a non-empty first and last "
                               "part (0 < split_point < its length)")
    tokens = tokens_of(text)
    if tokens is None:
        raise data_error(path, "text holds a character outside LEAF's vocabulary")
    return tokens, np.stack([starts, starts + split.astype(np.int64), ends], 1)


def roles_federated(name: str, roles: Sequence[ClientData]) -> TextFederatedDataset:
    """Roles as `TextFederatedDataset.client` gives them, one corpus again: a role's text is
    its first window, then every target; its split, where its first query target lies."""
    texts = [torch.cat([role.x[0], role.y]) for role in roles]
    starts = np.cumsum([0] + [len(text) for text in texts])[:-1]
    splits = [WINDOW + int(role.query_mask.int().argmax()) for role in roles]
    bounds = np.stack([starts, starts + splits, starts + [len(t) for t in texts]], 1)
    return TextFederatedDataset(name, torch.cat(texts), bounds.astype(np.int64))


def sample_counts(bounds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each role's (support, query) sample counts: targets before and from its split."""
    first = bounds[:, 0] + WINDOW  # the first target
    support = np.clip(bounds[:, 1] - first, 0, None)
    return support, bounds[:, 2] - np.maximum(bounds[:, 1], first)


def shakespeare_roles(path: str | Path | None = None, min_samples: int = 1,
                      download: bool = False) -> TextFederatedDataset:
    """Every role of a Shakespeare file with at least `min_samples` support and query samples
    each (LEAF's minimum samples per user) as a client."""
    path = resolve_dataset("shakespeare", path, download)
    tokens, bounds = read_roles(path)
    support, query = sample_counts(bounds)
    bounds = bounds[(support >= min_samples) & (query >= min_samples)]
    return TextFederatedDataset("shakespeare", torch.from_numpy(tokens), bounds)


def shakespeare_federated(path: str | Path | None = None, test_fraction: float = 0.2,
                          seed: int = 0, min_samples: int = 1, download: bool = False
                          ) -> tuple[TextFederatedDataset, TextFederatedDataset]:
    """(training roles, meta-test roles): `shakespeare_roles`, split at random by `seed`,
    `test_fraction` of them to meta-test."""
    path = resolve_dataset("shakespeare", path, download)
    return hold_out_test(shakespeare_roles(path, min_samples), test_fraction, seed, path,
                         f"roles with {min_samples} support and query samples")
