"""Aggregators: reduce stacked client deltas [C, ...] to one delta.

How the weighted sum is computed is a `Summation`: in the clear by default, or through a secure
aggregation protocol's arithmetic (`fedmeta.privacy.secure_aggregation`,
`fedmeta.privacy.encryption`), which reveals only the sum, with that protocol's rounding.
"""

from typing import Callable

import torch

from fedmeta.params import Params
from fedmeta.server.chain import Round, Stage

# (deltas [C, ...], coefficients [C], call count) -> (sum of coefficient x delta, total
# coefficient), both as the protocol computes them; the count seeds any randomness it needs.
Summation = Callable[[Params, torch.Tensor, int], tuple[Params, torch.Tensor]]


def plain_sum(deltas: Params, coefficients: torch.Tensor, count: int) -> tuple[Params, torch.Tensor]:
    """The weighted sum in the clear."""
    return ({k: torch.tensordot(coefficients.to(v), v, dims=1) for k, v in deltas.items()},
            coefficients.sum())


def divide(total: Params, weight: torch.Tensor, denominator: float | None) -> Params:
    """A sum over its total weight (the weighted mean), or over a fixed `denominator`."""
    divisor = weight if denominator is None else denominator
    return {k: v / divisor for k, v in total.items()}


def coefficients(weights: torch.Tensor, fixed_denominator: bool) -> torch.Tensor:
    """Each client's coefficient in the round's sum [C]: its weight, for the sample-weighted
    mean; 1, for a mean over a fixed denominator (DP-FedAvg: each client's influence bounded
    by the clip alone). The one statement of the rule, wherever the sum is computed."""
    return torch.ones_like(weights) if fixed_denominator else weights


def mean(denominator: float | None = None, summation: Summation = plain_sum) -> Stage:
    """The clients' deltas summed by `summation` and divided: with `denominator` None, the
    sample-weighted mean (FedAvg: McMahan et al. 2017); otherwise the unweighted sum over that
    fixed number (DP-FedAvg's expected cohort size, so one client's influence is bounded)."""

    def apply(rnd: Round, state: dict) -> tuple[Round, dict]:
        total, weight = summation(rnd.deltas, coefficients(rnd.weights, denominator is not None),
                                  int(state["count"]))
        return (rnd.with_deltas(divide(total, weight, denominator), aggregated=True),
                {"count": state["count"] + 1})

    return Stage(lambda params: {"count": torch.zeros((), dtype=torch.int64)}, apply)


def weighted_mean(summation: Summation = plain_sum) -> Stage:
    """Sample-weighted mean of the client deltas (FedAvg: McMahan et al. 2017)."""
    return mean(None, summation)
