"""Which clients take part in a round: a fixed-size uniform cohort, or Poisson sampling where
each client joins independently with probability q (the sampling DP accounting assumes)."""

import torch


def uniform_cohort(num_clients: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """`size` distinct clients, uniformly at random."""
    size = min(size, num_clients)
    return torch.randperm(num_clients, generator=generator)[:size].sort().values


def poisson_cohort(num_clients: int, rate: float, generator: torch.Generator) -> torch.Tensor:
    """Each client independently with probability `rate`."""
    return torch.nonzero(torch.rand(num_clients, generator=generator) < rate).flatten()
