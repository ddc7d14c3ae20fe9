"""Held-out clients. Meta-test clients: a fraction of a dataset's clients drawn by seed, that
no client trained or was selected on. Meta-validation clients: held out of meta-training like
the meta-test clients, and disjoint from both, so that everything decided during training
(intermediate evaluations, early stopping, the round whose model is kept) reads them, never
the meta-test clients (Vinyals et al. 2016 and Snell et al. 2017 keep validation classes out
of Omniglot's background set the same way; here whole clients: alphabets, writers).

Where held-out data are the training clients' own (PFLlib's personalized-FL benchmarks), the
validation examples are instead a part of each client's training split (`own_splits`)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import TypeVar

import numpy as np

from fedmeta.data.federated import ArrayFederatedDataset
from fedmeta.data.npz import data_error

Clients = TypeVar("Clients")  # a dataset whose clients subset (array or text clients)


def hold_out_test(dataset: Clients, test_fraction: float, seed: int, path: str | Path,
                  what: str) -> tuple[Clients, Clients]:
    """(the training side, the meta-test clients): `test_fraction` of `dataset`'s clients
    (rounded) drawn at random by `seed`, each side in the dataset's order. One-line UserError
    naming the file `path` if either side would be empty (`what`: the clients, in words)."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    n = dataset.num_clients
    n_test = int(round(test_fraction * n))
    if not 0 < n_test < n:
        raise data_error(path, f"{n} {what} cannot be split into training and held-out clients "
                               f"at test_fraction {test_fraction}")
    order = np.random.default_rng(seed).permutation(n)
    return (dataset.subset(f"{dataset.name}-train", np.sort(order[n_test:]).tolist()),
            dataset.subset(f"{dataset.name}-test", np.sort(order[:n_test]).tolist()))


def validation_count(num_clients: int, fraction: float) -> int:
    """How many of `num_clients` a `fraction` holds out: rounded up, so any fraction above 0
    holds out at least one client; 0 holds out none."""
    return math.ceil(fraction * num_clients - 1e-9) if fraction > 0 else 0


def hold_out_validation(dataset: Clients, fraction: float,
                        seed: int) -> tuple[Clients, Clients]:
    """(the clients left to meta-train, the meta-validation clients): `validation_count`
    clients of `dataset` drawn at random by `seed`, each side in the dataset's order.
    ValueError if no client would be left to train."""
    count = validation_count(dataset.num_clients, fraction)
    if count >= dataset.num_clients:
        raise ValueError(f"holding out {count} of {dataset.num_clients} training clients for "
                         f"meta-validation leaves none to train")
    order = np.random.default_rng([seed, dataset.num_clients]).permutation(dataset.num_clients)
    validation, train = np.sort(order[:count]), np.sort(order[count:])
    return (dataset.subset(f"{dataset.name}-train", train.tolist()),
            dataset.subset(f"{dataset.name}-validation", validation.tolist()))


def own_splits(dataset: ArrayFederatedDataset, fraction: float, seed: int
               ) -> tuple[ArrayFederatedDataset, ArrayFederatedDataset, ArrayFederatedDataset]:
    """(training, validation, test) parts of every client of `dataset`, client i of each
    holding client i's: its query examples (`query_mask`) are its test part; `fraction` of
    the others (rounded, drawn by `seed`) its validation part; the rest it trains on."""
    train, validation, test = [], [], []
    rng = np.random.default_rng([seed, 2])
    for i in range(dataset.num_clients):
        indices, query = dataset.client_indices(i), dataset.query_mask_of(i)
        own = rng.permutation(indices[~query])
        count = int(round(fraction * len(own)))
        train.append(np.sort(own[count:]))
        validation.append(np.sort(own[:count]))
        test.append(indices[query])
    return (dataset.regrouped(f"{dataset.name}-train", train),
            dataset.regrouped(f"{dataset.name}-validation", validation),
            dataset.regrouped(f"{dataset.name}-test", test))
