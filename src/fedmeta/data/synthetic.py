"""LEAF Synthetic(alpha, beta): heterogeneous multinomial-logistic clients, generated on demand.

Li et al. 2020, "Federated Optimization in Heterogeneous Networks" (FedProx, MLSys), Sec. 5.1;
Caldas et al. 2018 (LEAF). alpha controls how much local models differ, beta how much local
data differ. As in the FedProx reference code, alpha and beta are standard deviations.
"""
from __future__ import annotations

import numpy as np
import torch

from fedmeta.data.federated import ClientData, FederatedDataset

_MIN_SIZE = 10
_SIGMA = 1.0  # lognormal shape: a heavy-tailed, power-law-like spread of client sizes


class SyntheticFederatedDataset(FederatedDataset):
    """Client ``i`` is drawn from a generator seeded by ``(seed, i)``, only when asked for."""

    def __init__(
        self, num_clients: int, alpha: float, beta: float, dim: int, num_classes: int, seed: int, mean_size: float
    ) -> None:
        if num_clients < 0 or dim < 1 or num_classes < 2 or mean_size <= _MIN_SIZE or alpha < 0 or beta < 0:
            raise ValueError(
                f"need num_clients >= 0, dim >= 1, num_classes >= 2, mean_size > {_MIN_SIZE}, alpha, beta >= 0"
            )
        self.name = f"synthetic({alpha},{beta})"
        self.alpha, self.beta, self.seed = alpha, beta, seed
        self._n, self._dim, self._classes = num_clients, dim, num_classes
        self._mu = float(np.log(mean_size - _MIN_SIZE) - _SIGMA**2 / 2)  # E[size] = mean_size
        self._cov_std = np.arange(1, dim + 1) ** -0.6  # Sigma_jj = j^-1.2

    @property
    def num_clients(self) -> int:
        return self._n

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (self._dim,)

    @property
    def num_classes(self) -> int:
        return self._classes

    def _rng(self, i: int, stream: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self._check_index(i), stream])

    def client_size(self, i: int) -> int:
        return _MIN_SIZE + int(self._rng(i, 0).lognormal(self._mu, _SIGMA))

    def client(self, i: int) -> ClientData:
        n, rng = self.client_size(i), self._rng(i, 1)
        u, b_mean = rng.normal(0.0, self.alpha), rng.normal(0.0, self.beta)
        w = rng.normal(u, 1.0, (self._classes, self._dim))
        b = rng.normal(u, 1.0, self._classes)
        v = rng.normal(b_mean, 1.0, self._dim)
        x = v + rng.standard_normal((n, self._dim)) * self._cov_std
        y = np.argmax(x @ w.T + b, axis=1)
        return ClientData(torch.from_numpy(x.astype(np.float32)), torch.from_numpy(y.astype(np.int64)))


def synthetic_federated(
    num_clients: int,
    alpha: float = 1.0,
    beta: float = 1.0,
    dim: int = 60,
    num_classes: int = 10,
    seed: int = 0,
    mean_size: float = 100.0,
) -> FederatedDataset:
    """Synthetic(alpha, beta) with ``num_clients`` lazily generated clients of mean size ``mean_size``."""
    return SyntheticFederatedDataset(num_clients, alpha, beta, dim, num_classes, seed, mean_size)
