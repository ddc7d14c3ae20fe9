"""Partitioners: split any labeled arrays into clients.

Each returns a list of int64 index arrays (sorted within a client), one per client, that together
cover every example exactly once; all are deterministic given ``seed``.
"""
from __future__ import annotations

import numpy as np


def _group(client_of: np.ndarray, num_clients: int) -> list[np.ndarray]:
    """Indices grouped by client id, sorted within each client."""
    order = np.argsort(client_of, kind="stable").astype(np.int64)
    return np.split(order, np.cumsum(np.bincount(client_of, minlength=num_clients))[:-1])


def _near_equal_sizes(total: int, parts: int) -> np.ndarray:
    """`total` cut into `parts` sizes that differ by at most one, the larger ones first."""
    return np.full(parts, total // parts) + (np.arange(parts) < total % parts)


def _check_clients(num_clients: int, n: int | None = None) -> None:
    if num_clients < 1:
        raise ValueError(f"num_clients must be >= 1, got {num_clients}")
    if n is not None and num_clients > n:
        raise ValueError(f"num_clients={num_clients} exceeds the {n} examples")


def _check_dirichlet(n: int, num_clients: int, alpha: float, min_size: int) -> None:
    """The arguments both Dirichlet partitioners take, checked alike."""
    _check_clients(num_clients)
    if alpha <= 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    if min_size * num_clients > n:
        raise ValueError(f"min_size={min_size} x {num_clients} clients exceeds the {n} examples")


def dirichlet_partition(
    labels: np.ndarray, num_clients: int, alpha: float, seed: int, min_size: int = 0
) -> list[np.ndarray]:
    """Label skew: each class is split across clients by proportions ~ Dir(alpha).

    Hsu, Qi, Brown 2019, "Measuring the effects of non-identical data distribution" (arXiv:1909.06335).
    Redraws (up to 1000 times) until every client holds at least ``min_size`` examples.
    """
    labels = np.asarray(labels)
    n = labels.shape[0]
    _check_dirichlet(n, num_clients, alpha, min_size)
    rng = np.random.default_rng(seed)
    classes, inverse = np.unique(labels, return_inverse=True)
    class_counts = np.bincount(inverse, minlength=classes.size)
    for _ in range(1000):
        props = rng.dirichlet(np.full(num_clients, float(alpha)), size=classes.size)
        counts = rng.multinomial(class_counts, props).reshape(classes.size, num_clients)
        if counts.sum(0).min() >= min_size:
            break
    else:
        raise ValueError(f"could not give every client >= {min_size} examples with alpha={alpha}")
    # Shuffle within each class, then hand out consecutive runs of each class's examples.
    shuffled = np.lexsort((rng.random(n), inverse))
    client_of = np.empty(n, dtype=np.int64)
    client_of[shuffled] = np.repeat(np.tile(np.arange(num_clients), classes.size), counts.ravel())
    return _group(client_of, num_clients)


def capped_dirichlet_partition(
    labels: np.ndarray, num_clients: int, alpha: float, seed: int, min_size: int = 0
) -> list[np.ndarray]:
    """Label skew as PFLlib's generator draws it ("dir", after Yurochkin et al. 2019's PFNM
    experiments): the classes in label order, each split by proportions ~ Dir(alpha) among
    the clients that hold fewer than n / num_clients examples so far (a client over its
    share takes no later class), redrawn (up to 1000 times) until every client holds at least
    ``min_size``. The cap keeps the clients that an early class made large out of the later
    classes, so a client holds fewer classes than under `dirichlet_partition`. (PFLlib
    zeroes the others' proportions, whose rounding can leave an example to a capped client;
    here the last client under its share takes it.)"""
    labels = np.asarray(labels)
    n = labels.shape[0]
    _check_dirichlet(n, num_clients, alpha, min_size)
    rng = np.random.default_rng(seed)
    of_class = [np.flatnonzero(labels == label) for label in np.unique(labels)]
    for _ in range(1000):
        client_of, sizes = np.empty(n, dtype=np.int64), np.zeros(num_clients, dtype=np.int64)
        for indices in of_class:
            members = rng.permutation(indices)
            under = np.flatnonzero(sizes < n / num_clients)
            shares = rng.dirichlet(np.full(num_clients, float(alpha)))[under]
            counts = np.diff(np.r_[0, (np.cumsum(shares / shares.sum()) * len(members))
                                   .astype(np.int64)[:-1], len(members)])
            client_of[members] = np.repeat(under, counts)
            sizes[under] += counts
        if sizes.min() >= min_size:
            return _group(client_of, num_clients)
    raise ValueError(f"could not give every client >= {min_size} examples with alpha={alpha}")


def shard_partition(
    labels: np.ndarray, num_clients: int, shards_per_client: int, seed: int
) -> list[np.ndarray]:
    """Pathological non-IID: sort by label, cut into equal shards, deal shards to clients.

    McMahan et al. 2017, "Communication-Efficient Learning of Deep Networks from Decentralized
    Data" (AISTATS). Shard sizes differ by at most one when they do not divide n.
    """
    labels = np.asarray(labels)
    n = labels.shape[0]
    _check_clients(num_clients)
    if shards_per_client < 1:
        raise ValueError(f"shards_per_client must be >= 1, got {shards_per_client}")
    num_shards = num_clients * shards_per_client
    if num_shards > n:
        raise ValueError(f"{num_shards} shards requested but only {n} examples")
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    by_label = perm[np.argsort(labels[perm], kind="stable")]
    shard_sizes = _near_equal_sizes(n, num_shards)
    client_of_shard = np.empty(num_shards, dtype=np.int64)
    client_of_shard[rng.permutation(num_shards)] = np.arange(num_shards) // shards_per_client
    client_of = np.empty(n, dtype=np.int64)
    client_of[by_label] = np.repeat(client_of_shard, shard_sizes)
    return _group(client_of, num_clients)


def _unbalanced_amounts(total: int, holders: int, rng: np.random.Generator) -> np.ndarray:
    """PFLlib's unbalanced shares of one class (`separate_data`, "pat", balance = False): with
    m = `holders` and s = total / m, the first m - 1 holders each take an integer drawn
    uniformly from low = max(1, floor(s / 10)) to floor(s) - 1 (low itself where that range
    is empty), and the last holder takes the rest, so at least s."""
    share = total / holders
    low = max(1, int(share / 10))
    counts = rng.integers(low, max(low + 1, int(share)), holders - 1)
    return np.append(counts, total - counts.sum())


def class_partition(labels: np.ndarray, num_clients: int, classes_per_client: int,
                    seed: int, balanced: bool = True) -> list[np.ndarray]:
    """Pathological label skew as PFLlib builds it: each client holds `classes_per_client`
    distinct classes, every class goes to as near the same number of clients as the counts
    allow (client i takes classes i*k, i*k+1, ... modulo the classes, in label order), and a
    class's examples are dealt at random (by `seed`) to the clients that hold it: in
    near-equal parts if `balanced`, else in PFLlib's unbalanced amounts
    (`_unbalanced_amounts`, the last holder the largest). Where k divides the number of
    classes and that number divides clients x k, the clients' class sets are those of
    PFLlib's generator (`separate_data`, "pat": each class to the first clients with room),
    so Fashion-MNIST's 20 clients of 2 classes pair the labels (0, 1), (2, 3), ... as
    there."""
    labels = np.asarray(labels)
    classes = np.unique(labels)
    _check_clients(num_clients, labels.shape[0])
    if not 1 <= classes_per_client <= classes.size:
        raise ValueError(f"classes_per_client must be in [1, {classes.size}], got "
                         f"{classes_per_client}")
    if num_clients * classes_per_client < classes.size:
        raise ValueError(f"{num_clients} clients of {classes_per_client} classes cannot hold "
                         f"all {classes.size} classes")
    rng = np.random.default_rng(seed)
    holders: dict[int, list[int]] = {int(c): [] for c in classes}
    for client in range(num_clients):
        for j in range(classes_per_client):
            holders[int(classes[(client * classes_per_client + j) % classes.size])].append(client)
    client_of = np.empty(labels.shape[0], dtype=np.int64)
    for label, clients in holders.items():
        members = rng.permutation(np.flatnonzero(labels == label))
        if len(members) < len(clients):
            raise ValueError(f"class {label} has {len(members)} examples for its "
                             f"{len(clients)} clients")
        amounts = (_near_equal_sizes(len(members), len(clients)) if balanced
                   else _unbalanced_amounts(len(members), len(clients), rng))
        client_of[members] = np.repeat(clients, amounts)
    return _group(client_of, num_clients)


def key_partition(keys: np.ndarray) -> list[np.ndarray]:
    """One client per distinct key (writer, alphabet, ...), in sorted key order."""
    _, inverse = np.unique(np.asarray(keys), return_inverse=True)
    inverse = inverse.reshape(-1)
    return _group(inverse, int(inverse.max()) + 1 if inverse.size else 0)


def random_partition(n: int, num_clients: int, seed: int) -> list[np.ndarray]:
    """IID: a random permutation cut into ``num_clients`` near-equal parts."""
    _check_clients(num_clients, n)
    client_of = np.empty(n, dtype=np.int64)
    client_of[np.random.default_rng(seed).permutation(n)] = np.arange(n) * num_clients // n
    return _group(client_of, num_clients)
