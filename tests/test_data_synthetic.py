import time

import pytest
import torch

from fedmeta.data import synthetic_federated


def test_deterministic_by_seed_and_client():
    a, b = synthetic_federated(50, seed=3), synthetic_federated(50, seed=3)
    ca, cb = a.client(7), b.client(7)
    assert torch.equal(ca.x, cb.x) and torch.equal(ca.y, cb.y)
    assert not torch.equal(synthetic_federated(50, seed=4).client(7).x[:5], ca.x[:5])
    assert not torch.equal(a.client(8).x[:5], ca.x[:5])


def test_shapes_and_sizes():
    ds = synthetic_federated(300, alpha=0.5, beta=0.5, dim=20, num_classes=5, mean_size=80)
    assert (ds.num_clients, ds.input_shape, ds.num_classes) == (300, (20,), 5)
    sizes = torch.tensor([ds.client_size(i) for i in range(300)]).float()
    assert sizes.min() >= 10 and 60 < sizes.mean() < 100 and sizes.max() > 2 * sizes.mean()
    c = ds.client(11)
    assert c.x.shape == (ds.client_size(11), 20) and c.x.dtype == torch.float32
    assert c.y.dtype == torch.int64 and 0 <= c.y.min() and c.y.max() < 5


def test_clients_generated_lazily():
    start = time.perf_counter()
    ds = synthetic_federated(100_000)
    c = ds.client(99_999)
    assert time.perf_counter() - start < 0.5
    assert len(c) == ds.client_size(99_999) == ds.client_size(-1)


def test_heterogeneity_grows_with_beta():
    """Client input means spread with beta (v_k ~ N(B_k, 1), B_k ~ N(0, beta))."""
    def spread(beta):
        ds = synthetic_federated(40, alpha=0.0, beta=beta, seed=0)
        return torch.stack([ds.client(i).x.mean() for i in range(40)]).std()

    assert spread(5.0) > 3 * spread(0.0)


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_clients"):
        synthetic_federated(-1)
