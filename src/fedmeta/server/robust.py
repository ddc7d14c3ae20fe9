"""Byzantine-robust aggregators: reduce stacked client deltas [C, ...] to one delta in a way a
minority of arbitrary (malicious or broken) updates cannot drag far.

They treat every client alike (the weights clients report are not trusted) and work on the
whole cohort's tensors at once: sorts along the client dimension, one matrix of pairwise
distances.

- `coordinate_median`, `trimmed_mean`: Yin, Chen, Ramchandran, Bartlett 2018, "Byzantine-Robust
  Distributed Learning: Towards Optimal Statistical Rates".
- `krum` (and Multi-Krum): Blanchard, El Mhamdi, Guerraoui, Stainer 2017, "Machine Learning
  with Adversaries: Byzantine Tolerant Gradient Descent".
- `norm_bounding`: Sun, Kairouz, Suresh, McMahan 2019, "Can You Really Backdoor Federated
  Learning?" (a client stage: each update clipped before any aggregator).
"""

import math

import torch

from fedmeta.params import Params, flatten_rows
from fedmeta.privacy.user_level import clip_rows
from fedmeta.server.chain import Round, Stage, stateless


def _aggregated(rnd: Round, deltas: Params) -> Round:
    return rnd.with_deltas(deltas, aggregated=True)


def sorted_clients(deltas: Params) -> Params:
    """Every coordinate's values sorted over the clients."""
    return {k: v.sort(0).values for k, v in deltas.items()}


def coordinate_median() -> Stage:
    """Each coordinate's median over the clients (the mean of the middle two for an even
    cohort, as numpy's median)."""

    def median(rnd: Round) -> Round:
        ordered = sorted_clients(rnd.deltas)
        count = len(rnd.weights)
        return _aggregated(rnd, {k: (v[(count - 1) // 2] + v[count // 2]) / 2
                                 for k, v in ordered.items()})

    return stateless(median)


def trim_count(count: int, fraction: float) -> int:
    """Values dropped at each end: floor(fraction x count), leaving at least one."""
    return min(math.floor(fraction * count), (count - 1) // 2)


def trimmed_mean(fraction: float) -> Stage:
    """Each coordinate's mean after dropping its `fraction` largest and smallest values."""

    def trim(rnd: Round) -> Round:
        count = len(rnd.weights)
        cut = trim_count(count, fraction)
        return _aggregated(rnd, {k: v[cut:count - cut].mean(0)
                                 for k, v in sorted_clients(rnd.deltas).items()})

    return stateless(trim)


def krum_scores(rows: torch.Tensor, byzantine: int) -> torch.Tensor:
    """Each row's Krum score: the sum of its squared distances to its C - f - 2 nearest other
    rows (at least one), for f = `byzantine`."""
    count = len(rows)
    exact = rows[None].double()
    distances = torch.cdist(exact, exact,
                            compute_mode="donot_use_mm_for_euclid_dist")[0].pow(2)
    neighbours = max(count - byzantine - 2, 1)
    nearest = distances.sort(1).values[:, 1:neighbours + 1]  # column 0: the row itself
    return nearest.sum(1)


def krum(fraction: float, multi: bool = False) -> Stage:
    """Krum: the update with the smallest score, f = floor(`fraction` x C) assumed Byzantine;
    Multi-Krum (`multi`): the mean of the C - f updates with the smallest scores."""

    def select(rnd: Round) -> Round:
        count = len(rnd.weights)
        byzantine = math.floor(fraction * count)
        scores = krum_scores(flatten_rows(rnd.deltas), byzantine)
        chosen = scores.argsort()[:count - byzantine if multi else 1]
        return _aggregated(rnd, {k: v[chosen].mean(0) for k, v in rnd.deltas.items()})

    return stateless(select)


def norm_bounding(bound: float) -> Stage:
    """Each client's update scaled down to L2 norm at most `bound`."""
    return stateless(lambda rnd: rnd.with_deltas(clip_rows(rnd.deltas, bound)))


ROBUST_RULES = {"median": lambda fraction: coordinate_median(),
                "trimmed-mean": trimmed_mean,
                "krum": krum,
                "multi-krum": lambda fraction: krum(fraction, multi=True)}
