"""Aggregators: reduce stacked client deltas [C, ...] to one delta."""

import torch

from fedmeta.server.chain import Round, Stage, stateless


def weighted_mean() -> Stage:
    """Sample-weighted mean of the client deltas (FedAvg: McMahan et al. 2017)."""

    def aggregate(rnd: Round) -> Round:
        w = rnd.weights / rnd.weights.sum()
        mean = {k: torch.tensordot(w.to(v.dtype), v, dims=1) for k, v in rnd.deltas.items()}
        return rnd.with_deltas(mean, aggregated=True)

    return stateless(aggregate)
