"""SecAgg+ on a deployment: Flower's `SecAggPlusWorkflow` (Bell et al. 2020) sums the sampled
clients' masked, quantized updates, so the server learns only their weighted mean, even when
some clients drop out mid-protocol. The workflow lives on Flower's legacy Strategy path; this
Strategy gives it fedmeta's cohorts and server pipeline, and `client_app` answers it with
`secaggplus_mod`.
"""

import logging
from typing import Any

import numpy as np
import torch
from flwr.common import FitIns, FitRes, Parameters, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.server import LegacyContext, ServerConfig
from flwr.server.client_manager import ClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.strategy import Strategy
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow

from fedmeta.flower.messages import config_message
from fedmeta.params import Params, owned

log = logging.getLogger("fedmeta.flower")


def to_parameters(params: Params) -> Parameters:
    return ndarrays_to_parameters([v.detach().numpy() for v in params.values()])


def from_arrays(arrays: list[np.ndarray], like: Params) -> Params:
    """Arrays as params shaped as `like`, each in memory of its own (`owned`)."""
    return {k: owned(torch.from_numpy(np.asarray(a)).to(v.dtype)).view(v.shape)
            for (k, v), a in zip(like.items(), arrays)}


class SecAggPlusRounds(Strategy):
    """Rounds of a `FlowerFederation` whose aggregate SecAgg+ computes."""

    def __init__(self, federation: Any, params: Params, server_state: dict[str, Any],
                 callbacks: list) -> None:
        self.federation, self.params, self.server_state = federation, params, server_state
        self.callbacks, self.metrics = callbacks, {}

    def initialize_parameters(self, client_manager: ClientManager) -> Parameters:
        return to_parameters(self.params)

    def configure_fit(self, server_round: int, parameters: Parameters,
                      client_manager: ClientManager) -> list[tuple[ClientProxy, FitIns]]:
        federation = self.federation
        nodes = [federation.train_nodes[c] for c in federation.cohort(server_round).tolist()]
        proxies = client_manager.all()
        ins = FitIns(parameters, config_message(
            federation.config, round=server_round, **{"num-classes": federation.num_classes}))
        self.metrics[server_round] = {"round": server_round, "clients": 0,
                                      "skipped": len(nodes)}
        return [(proxies[str(node)], ins) for node in nodes if str(node) in proxies]

    def aggregate_fit(self, server_round: int, results: list[tuple[ClientProxy, FitRes]],
                      failures: list) -> tuple[Parameters | None, dict]:
        if not results:
            return None, {}
        # every result's parameters are now the secure weighted mean of the clients' deltas
        mean = from_arrays(parameters_to_ndarrays(results[0][1].parameters), self.params)
        metrics = [{"weight": float(r.num_examples), "loss": float(r.metrics["loss"])}
                   for _, r in results]
        total_weight = sum(m["weight"] for m in metrics)
        total = {k: v * total_weight for k, v in mean.items()}
        skipped = self.metrics[server_round]["skipped"] - len(results)
        self.params, self.server_state, self.metrics[server_round] = (
            self.federation.secure_step(server_round, self.params, self.server_state, total,
                                        metrics, skipped))
        return to_parameters(self.params), {}

    def evaluate(self, server_round: int, parameters: Parameters) -> None:
        """After each round: what the simulation's loop adds (`Simulation.after_round`: epsilon,
        meta-validation when due), then the run's callbacks."""
        if server_round == 0:
            return None
        metrics = self.metrics.get(server_round, {"round": server_round, "clients": 0})
        self.federation.after_round(server_round, self.params, metrics)
        for callback in self.callbacks:
            callback(server_round, self.params, self.server_state, metrics)
        return None

    def configure_evaluate(self, server_round: int, parameters: Parameters,
                           client_manager: ClientManager) -> list:
        return []

    def aggregate_evaluate(self, server_round: int, results: list,
                           failures: list) -> tuple[None, dict]:
        return None, {}


def run_secagg_plus(federation: Any, context: Any, params: Params,
                    server_state: dict[str, Any], callbacks: list) -> Params:
    """`server.rounds` SecAgg+ rounds; the final params."""
    config, agg = federation.config, federation.config.aggregation
    strategy = SecAggPlusRounds(federation, params, server_state, callbacks)
    workflow = DefaultWorkflow(fit_workflow=SecAggPlusWorkflow(
        num_shares=agg.secagg_num_shares,
        reconstruction_threshold=agg.secagg_reconstruction_threshold,
        max_weight=agg.secagg_max_weight, clipping_range=agg.secagg_clipping_range,
        quantization_range=agg.secagg_quantization_range,
        modulus_range=agg.secagg_modulus_range, timeout=config.flower.round_timeout))
    workflow(federation.grid, LegacyContext(context=context, config=ServerConfig(
        num_rounds=config.server.rounds, round_timeout=config.flower.round_timeout),
        strategy=strategy))
    return strategy.params
