"""User-level differential privacy for federated rounds, DP-FedAvg (McMahan, Ramage, Talwar,
Zhang 2018, "Learning Differentially Private Recurrent Language Models"), as server chain
stages: clip each client's whole update to L2 norm C, average with a fixed denominator (the
expected cohort size, so one client moves the mean by at most C / expected whatever the
cohort), add Gaussian noise of std `noise_multiplier * C / expected`. With Poisson sampling
of clients this is the subsampled Gaussian mechanism `fedmeta.privacy.accountant` accounts.
"""

from dataclasses import replace

import torch

from fedmeta.seeding import CLIP_STREAM, NOISE_STREAM, normal_like, seeded
from fedmeta.server.chain import Round, Stage, stateless


def client_norms(deltas: dict[str, torch.Tensor]) -> torch.Tensor:
    """L2 norm of each row of stacked params, all params together: [C] (a client's whole
    update, or one example's gradient)."""
    return torch.sqrt(sum(v.flatten(1).pow(2).sum(1) for v in deltas.values()))


def clip_factors(deltas: dict[str, torch.Tensor], clip_norm: float) -> torch.Tensor:
    """Per row, the factor that scales it down to L2 norm at most `clip_norm`: [C]."""
    return (clip_norm / client_norms(deltas).clamp_min(1e-12)).clamp(max=1.0)


def clip_rows(deltas: dict[str, torch.Tensor], clip_norm: float) -> dict[str, torch.Tensor]:
    """Each row of stacked params scaled down to L2 norm at most `clip_norm` (flat clipping)."""
    scale = clip_factors(deltas, clip_norm)
    return {k: v * scale.view(-1, *[1] * (v.dim() - 1)).to(v) for k, v in deltas.items()}


def clip_to(rnd: Round, clip_norm: float) -> Round:
    """Each client's update clipped to `clip_norm`, the norm noise will be scaled to."""
    return replace(rnd.with_deltas(clip_rows(rnd.deltas, clip_norm)), clip_norm=clip_norm)


def clip_updates(clip_norm: float) -> Stage:
    """Clip every client's update to L2 norm `clip_norm`."""
    return stateless(lambda rnd: clip_to(rnd, clip_norm))


def adaptive_noise_split(noise_multiplier: float, count_noise: float) -> float:
    """The updates' noise multiplier when `count_noise` (std of the noise on the count of
    unclipped clients) takes part of the budget: sigma_updates^-2 + (2 count_noise)^-2 =
    noise_multiplier^-2 (Andrew et al. 2021, Thm. 1), so the pair is accounted as one Gaussian
    mechanism of `noise_multiplier`."""
    rest = noise_multiplier ** -2 - (2 * count_noise) ** -2
    if rest <= 0:
        raise ValueError(f"adaptive clipping's count noise {count_noise} must exceed half the "
                         f"noise multiplier {noise_multiplier}: raise privacy.clip_count_noise")
    return rest ** -0.5


def adaptive_clipping(initial: float, quantile: float, learning_rate: float,
                      count_noise: float, expected_clients: float, seed: int) -> Stage:
    """Clip to a norm that tracks the `quantile` of the clients' update norms (Andrew,
    Thakkar, McMahan, Ramaswamy 2021, "Differentially Private Learning with Adaptive
    Clipping"): after clipping to C, C <- C exp(-lr (b - quantile)), b the fraction of
    clients within C, privatized with noise of std `count_noise` on the count."""

    def apply(rnd: Round, state: dict) -> tuple[Round, dict]:
        clip_norm, count = float(state["clip_norm"]), int(state["count"])
        within = (client_norms(rnd.deltas) <= clip_norm).double().sum()
        noise = count_noise * torch.randn((), generator=seeded(seed, CLIP_STREAM, count),
                                          dtype=torch.float64)
        fraction = (within + noise) / expected_clients
        updated = clip_norm * torch.exp(-learning_rate * (fraction - quantile))
        return clip_to(rnd, clip_norm), {"clip_norm": updated, "count": state["count"] + 1}

    return Stage(lambda params: {"clip_norm": torch.tensor(initial, dtype=torch.float64),
                                 "count": torch.zeros((), dtype=torch.int64)}, apply)


def gaussian_noise(noise_multiplier: float, expected_clients: float, seed: int) -> Stage:
    """Add N(0, s^2) to every coordinate of the aggregate, s = `noise_multiplier` x the clip
    norm / `expected_clients`. Each call draws from a generator seeded by (seed, calls so
    far); the count is the stage's state, so a resumed run draws the same noise."""

    def apply(rnd: Round, state: dict) -> tuple[Round, dict]:
        if not rnd.aggregated or rnd.clip_norm is None:
            raise ValueError("the noise stage must come after clipping and an aggregator")
        std = noise_multiplier * rnd.clip_norm / expected_clients
        generator = seeded(seed, NOISE_STREAM, int(state["count"]))
        noisy = {k: v + std * normal_like(v, generator)
                 for k, v in rnd.deltas.items()}
        return rnd.with_deltas(noisy), {"count": state["count"] + 1}

    return Stage(lambda params: {"count": torch.zeros((), dtype=torch.int64)}, apply)
