"""The server pipeline as a run uses it: the client stages, the aggregator and the stages
after it, which a deployment with secure aggregation runs apart (the sum between them computed
securely)."""

from dataclasses import dataclass
from functools import cached_property

import torch

from fedmeta.params import Params
from fedmeta.server.aggregate import divide
from fedmeta.server.chain import ChainState, Round, Stage, named_chain


@dataclass(frozen=True)
class Pipeline:
    """The server pipeline in three parts: per-client stages (compression, clipping), the
    aggregator, and the stages on the aggregate (noise, the server optimizer). `init`/`apply`
    run all three, as a simulation does; a deployment with secure aggregation runs `client`
    on each client, sums securely and runs `server` on the mean. `denominator`: the mean's
    fixed denominator (DP-FedAvg's expected cohort), or None for the sample-weighted mean."""

    client: Stage
    aggregate: Stage
    server: Stage
    denominator: float | None = None

    @cached_property
    def stage(self) -> Stage:
        return named_chain(("client", self.client), ("aggregate", self.aggregate),
                           ("server", self.server))

    def init(self, params: Params) -> dict:
        return self.stage.init(params)

    def apply(self, rnd: Round, state: dict) -> tuple[Round, dict]:
        return self.stage.apply(rnd, state)

    def apply_to_sum(self, total: Params, weights: torch.Tensor, clip_norm: float | None,
                     state: dict) -> tuple[Round, dict]:
        """The stages after the aggregator on a sum of the clients' contributions computed
        elsewhere (secure aggregation), made the mean the aggregator would have made."""
        rnd = Round(divide(total, weights.sum(), self.denominator), weights, aggregated=True,
                    clip_norm=clip_norm)
        rnd, server_state = self.server.apply(rnd, state["server"])
        return rnd, ChainState({**state, "server": server_state})
