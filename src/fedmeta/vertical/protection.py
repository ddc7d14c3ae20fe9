"""Protection of what crosses the cut of a split network: each row (one person's embedding,
or the gradient sent back for it) clipped, then noised.

Gaussian: rows clipped to L2 norm C, noise N(0, (m C)^2) per coordinate. Laplace: rows clipped
to L1 norm C, noise Laplace(0, m C) per coordinate. Either way two people's rows differ by at
most 2C in that norm, so one release of a row is the Gaussian (Laplace) mechanism of noise
multiplier m / 2 with respect to that person's row (Dwork & Roth 2014, ch. 3; Abadi et al.
2016 for clipping as the sensitivity bound): an embedding release is DP for the features of
the party that sends it, a gradient release (the label party's) DP for that person's label
and the label party's features.

What this does not cover, said plainly: the guarantee is per released row *given the models
of that step*. The bottom and top models are trained on every person's data, so a later
release of anyone's row also depends on this person's data through the models; the epsilon
composed over a row's releases (`epsilon`) bounds what those releases of *its own row* say,
not the whole transcript. A guarantee for the transcript would need DP training of the models
themselves (DP-SGD on each party), which this module does not do.
"""

from dataclasses import dataclass
from typing import Literal

import dp_accounting
import torch
from dp_accounting.pld import PLDAccountant

Noise = Literal["none", "gaussian", "laplace"]


@dataclass(frozen=True)
class Protection:
    """`noise` of scale `multiplier * clip` on rows clipped to `clip` (None: not clipped)."""

    noise: Noise = "none"
    clip: float | None = None
    multiplier: float = 0.0

    def __post_init__(self) -> None:
        if self.noise != "none" and (self.clip is None or self.multiplier <= 0):
            raise ValueError(f"{self.noise} noise needs a clip norm and a multiplier > 0 "
                             "(its scale is multiplier x clip)")

    @property
    def norm(self) -> int:
        """The norm rows are clipped in: L1 for Laplace noise, L2 otherwise."""
        return 1 if self.noise == "laplace" else 2

    def clip_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """`rows` [B, D], each scaled down to norm at most `clip` (differentiable)."""
        if self.clip is None:
            return rows
        norms = torch.linalg.vector_norm(rows, ord=self.norm, dim=1, keepdim=True)
        return rows * torch.clamp(self.clip / norms.clamp_min(1e-12), max=1.0)

    def add_noise(self, rows: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if self.noise == "none":
            return rows
        scale = self.multiplier * self.clip
        if self.noise == "gaussian":
            return rows + scale * torch.randn(rows.shape, generator=generator)
        # Laplace(0, b) as the difference of two exponentials of mean b
        exponentials = torch.empty((2, *rows.shape)).exponential_(generator=generator)
        return rows + scale * (exponentials[0] - exponentials[1])

    def release(self, rows: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """What crosses: `rows` clipped and noised."""
        return self.add_noise(self.clip_rows(rows), generator)

    def event(self) -> dp_accounting.DpEvent | None:
        """One release of a row, as a DP event (None without noise)."""
        if self.noise == "gaussian":
            return dp_accounting.GaussianDpEvent(self.multiplier / 2)
        if self.noise == "laplace":
            return dp_accounting.LaplaceDpEvent(self.multiplier / 2)
        return None

    def epsilon(self, releases: int, delta: float) -> float:
        """Epsilon at `delta` of `releases` releases of one row, by privacy loss
        distributions (inf without noise)."""
        event = self.event()
        if event is None:
            return float("inf")
        ledger = PLDAccountant()
        ledger.compose(event, releases)
        return float(ledger.get_epsilon(delta))
