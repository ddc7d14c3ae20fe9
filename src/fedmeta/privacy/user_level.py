"""User-level differential privacy for federated rounds, DP-FedAvg (McMahan, Ramage, Talwar,
Zhang 2018, "Learning Differentially Private Recurrent Language Models"), as server chain
stages: clip each client's whole update to L2 norm C, average with a fixed denominator (the
expected cohort size, so one client moves the mean by at most C / expected whatever the
cohort), add Gaussian noise of std `noise_multiplier * C / expected`. With Poisson sampling
of clients this is the subsampled Gaussian mechanism `fedmeta.privacy.accountant` accounts.
"""

import torch

from fedmeta.engine.seeding import seeded
from fedmeta.server.chain import Round, Stage, stateless


def client_norms(deltas: dict[str, torch.Tensor]) -> torch.Tensor:
    """L2 norm of each client's whole update (all params together): [C]."""
    return torch.sqrt(sum(v.flatten(1).pow(2).sum(1) for v in deltas.values()))


def clip_updates(clip_norm: float) -> Stage:
    """Scale each client's update down to L2 norm at most `clip_norm` (flat clipping)."""

    def clip(rnd: Round) -> Round:
        scale = (clip_norm / client_norms(rnd.deltas).clamp_min(1e-12)).clamp(max=1.0)
        return rnd.with_deltas({k: v * scale.view(-1, *[1] * (v.dim() - 1)).to(v.dtype)
                                for k, v in rnd.deltas.items()})

    return stateless(clip)


def private_mean(expected_clients: float) -> Stage:
    """The unweighted sum of the clients' updates over the expected cohort size."""

    def aggregate(rnd: Round) -> Round:
        return rnd.with_deltas({k: v.sum(0) / expected_clients for k, v in rnd.deltas.items()},
                               aggregated=True)

    return stateless(aggregate)


def gaussian_noise(std: float, seed: int) -> Stage:
    """Add N(0, std^2) to every coordinate of the aggregate. Each call draws from a generator
    seeded by (seed, calls so far); the count is the stage's state, so a resumed run draws
    the same noise."""

    def apply(rnd: Round, state: dict) -> tuple[Round, dict]:
        if not rnd.aggregated:
            raise ValueError("the noise stage must come after an aggregator in the chain")
        generator = seeded(seed, int(state["count"]))
        noisy = {k: v + std * torch.randn(v.shape, generator=generator, dtype=v.dtype)
                 for k, v in rnd.deltas.items()}
        return rnd.with_deltas(noisy), {"count": state["count"] + 1}

    return Stage(lambda params: {"count": torch.zeros((), dtype=torch.int64)}, apply)
