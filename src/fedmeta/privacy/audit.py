"""Empirical privacy estimation in one run: canary clients (Andrew, Kairouz, Oh, Oprea,
McMahan, Suriyakumar 2023, "One-shot Empirical Privacy Estimation for Federated Learning").

`num_canaries` fake clients join the federation, each sampled like a real client, and always
send the same update: its own random direction in parameter space, of norm `norm`. After
training, the cosine between the model's total change and each inserted canary's direction is
compared with the cosines of as many directions never inserted: if the two are told apart,
the run leaks. Fitting a Gaussian to each, the pair N(0, s^2) vs N(mu, s^2) is a Gaussian
mechanism of noise multiplier s / mu, whose epsilon at delta is the estimate (s: the larger of
the two sample stds). It is an estimate from the final model only, not a proof: the
accountant's epsilon is the guarantee, and the estimate should sit below it.
"""

import math
from typing import Any

import dp_accounting
import torch

from fedmeta.seeding import AUDIT_STREAM, seeded
from fedmeta.params import Params


class CanaryAudit:
    def __init__(self, template: Params, num_canaries: int, norm: float, sample_rate: float,
                 seed: int) -> None:
        self.shapes = {k: v.shape for k, v in template.items()}
        self.num_canaries, self.norm = num_canaries, norm
        self.sample_rate, self.seed = sample_rate, seed
        self.dim = sum(v.numel() for v in template.values())

    def direction(self, canary: int) -> torch.Tensor:
        """Canary `canary`'s unit direction (flat); 0..n-1 are inserted, n..2n-1 never are."""
        v = torch.randn(self.dim, generator=seeded(self.seed, AUDIT_STREAM, 0, canary),
                        dtype=torch.float64)
        return v / v.norm()

    def round_updates(self, round_index: int) -> Params | None:
        """The updates [m, ...] of the canaries sampled this round (None: none sampled)."""
        joined = torch.rand(self.num_canaries, generator=seeded(
            self.seed, AUDIT_STREAM, 1, round_index)) < self.sample_rate
        canaries = torch.nonzero(joined).flatten().tolist()
        if not canaries:
            return None
        flat = self.norm * torch.stack([self.direction(c) for c in canaries])
        out, start = {}, 0
        for key, shape in self.shapes.items():
            size = math.prod(shape)
            out[key] = flat[:, start:start + size].reshape(len(canaries), *shape).float()
            start += size
        return out

    def estimate(self, initial: Params, final: Params, delta: float) -> dict[str, Any]:
        """Cosines of the model's total change with inserted and never-inserted canaries, and
        the epsilon estimate at `delta`."""
        change = torch.cat([(final[k] - initial[k]).flatten().double().cpu()
                            for k in self.shapes])
        change = change / change.norm().clamp_min(1e-30)
        cosines = torch.stack([self.direction(c) @ change
                               for c in range(2 * self.num_canaries)])
        inserted, unobserved = cosines[:self.num_canaries], cosines[self.num_canaries:]
        mu = float(inserted.mean() - unobserved.mean())
        spread = float(max(inserted.std(), unobserved.std()))
        estimate = 0.0 if mu <= 0 else float(dp_accounting.get_epsilon_gaussian(spread / mu,
                                                                                delta))
        return {"epsilon_estimate": estimate, "delta": delta, "canaries": self.num_canaries,
                "inserted_cosine_mean": float(inserted.mean()),
                "unobserved_cosine_mean": float(unobserved.mean()), "cosine_std": spread}
