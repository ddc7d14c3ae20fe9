"""The parties of a vertical run: each an id per row and its own columns; the label party (the
first) also the labels. From a CSV per party, or scikit-learn's breast-cancer data (Street,
Wolberg, Mangasarian 1993: 569 patients x 30 columns, malignant or benign) split by columns
over departments that each hold a random part of the patients.
"""

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.datasets import load_breast_cancer

from fedmeta.errors import UserError


@dataclass(frozen=True)
class Party:
    """`ids` [N] strings, `x` [N, d] float32, `y` [N] class numbers (the label party only)."""

    name: str
    ids: list[str]
    x: np.ndarray
    y: np.ndarray | None = None


def read_party_csv(path: str | Path, labelled: bool) -> Party:
    """A party's CSV: a header `id,<column>,...` (the label party's with a `label` column
    too), one row per person. UserError (one line) on a missing or unreadable file, a row
    whose field count is not the header's, a value that is not a number, or labels that are
    not class numbers 0..C-1."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:  # a BOM is no id
            rows = list(csv.reader(handle))
    except FileNotFoundError:
        raise UserError(f"{path}: no such party file") from None
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise UserError(f"{path}: cannot read it as CSV: {error}") from None
    if not rows or not rows[0] or rows[0][0] != "id":
        raise UserError(f"{path}: the header must start with 'id'")
    header = rows[0]
    if labelled != ("label" in header):
        raise UserError(f"{path}: " + ("the label party's file needs a 'label' column"
                                       if labelled else "only the label party (the first "
                                       "file) has a 'label' column"))
    if len(header) < 2 + labelled:
        raise UserError(f"{path}: no feature columns after 'id'")
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise UserError(f"{path} line {line}: {len(row)} fields, the header has "
                            f"{len(header)}")
    if len(rows) < 2:
        raise UserError(f"{path}: no rows")
    table = np.array(rows[1:], dtype=object)
    columns = [c for c in range(1, len(header)) if header[c] != "label"]
    try:
        x = table[:, columns].astype(np.float32)
    except ValueError as error:
        raise UserError(f"{path}: a feature value is not a number ({error})") from None
    if not np.isfinite(x).all():
        raise UserError(f"{path}: a feature value is nan or infinite")
    y = None
    if labelled:
        labels = table[:, header.index("label")]
        if not all(label.isdigit() for label in labels):
            raise UserError(f"{path}: labels must be class numbers 0, 1, ...")
        y = labels.astype(np.int64)
        if len(np.unique(y)) < 2 or np.unique(y).tolist() != list(range(y.max() + 1)):
            raise UserError(f"{path}: labels must be the class numbers 0..C-1, each present, "
                            "at least 2 classes")
    return Party(path.name, [str(i) for i in table[:, 0]], x, y)


def read_parties(paths: Sequence[str | Path]) -> list[Party]:
    """One party per CSV, the first the label party."""
    return [read_party_csv(path, labelled=p == 0) for p, path in enumerate(paths)]


def breast_cancer_departments(departments: int, holding: float, seed: int) -> list[Party]:
    """scikit-learn's breast-cancer data by departments: department k holds the k-th of
    `departments` contiguous column groups (with 3: the cells' means, standard errors and
    worst values), for its own random `holding` fraction of the patients, ids
    `patient-NNN`, rows in an order of its own; department 0 holds the labels (1 =
    malignant, the minority: 212 of 569)."""
    data = load_breast_cancer()
    x, y = data.data.astype(np.float32), (data.target == 0).astype(np.int64)
    ids = np.array([f"patient-{i:03d}" for i in range(len(y))])
    rng = np.random.default_rng(seed)
    parties = []
    for k, columns in enumerate(np.array_split(np.arange(x.shape[1]), departments)):
        rows = rng.permutation(len(y))[:max(1, round(holding * len(y)))]
        parties.append(Party(f"department {k}", ids[rows].tolist(), x[np.ix_(rows, columns)],
                             y[rows] if k == 0 else None))
    return parties
