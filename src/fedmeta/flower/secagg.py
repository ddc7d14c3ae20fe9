"""SecAgg+ on a deployment: Flower's `SecAggPlusWorkflow` (Bell et al. 2020) sums the sampled
clients' masked, quantized updates, so the server learns only their weighted mean, even when
some clients drop out mid-protocol. The workflow lives on Flower's legacy Strategy path and
runs one round per call: `secagg_plus_sum` calls it for one round of fedmeta's loop
(`Simulation.run`), with a Strategy that only hands it the round's cohort and keeps what it
returns; `client_app` answers it with `secaggplus_mod`.
"""

import time
from typing import Any

import numpy as np
import torch
from flwr.app import ConfigRecord, Context
from flwr.common import FitIns, FitRes, Parameters, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.compat.common import recorddict_compat as compat
from flwr.server import LegacyContext, ServerConfig
from flwr.server.client_manager import ClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.compat.grid_client_proxy import GridClientProxy
from flwr.server.strategy import Strategy
from flwr.server.workflow import SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD, Key
from flwr.serverapp import Grid

from fedmeta.build import secagg_max_weight
from fedmeta.config import Config
from fedmeta.params import Params, owned


def to_parameters(params: Params) -> Parameters:
    return ndarrays_to_parameters([v.detach().cpu().numpy() for v in params.values()])


def from_arrays(arrays: list[np.ndarray], like: Params) -> Params:
    """Arrays as params shaped as `like` (its dtypes, on its device), each in memory of its
    own (`owned`)."""
    return {k: owned(torch.from_numpy(np.asarray(a)).to(v)).view(v.shape)
            for (k, v), a in zip(like.items(), arrays)}


class CohortFit(Strategy):
    """The Strategy side of one SecAgg+ round: fit instructions for the round's cohort
    (`nodes`), and the results the workflow aggregated, kept as they come."""

    def __init__(self, grid: Grid, run_id: int, nodes: list[int], ins: FitIns) -> None:
        self.grid, self.run_id, self.nodes, self.ins = grid, run_id, nodes, ins
        self.results: list[tuple[ClientProxy, FitRes]] = []

    def initialize_parameters(self, client_manager: ClientManager) -> None:
        return None

    def configure_fit(self, server_round: int, parameters: Parameters,
                      client_manager: ClientManager) -> list[tuple[ClientProxy, FitIns]]:
        return [(GridClientProxy(node, self.grid, self.run_id), self.ins) for node in self.nodes]

    def aggregate_fit(self, server_round: int, results: list[tuple[ClientProxy, FitRes]],
                      failures: list) -> tuple[None, dict]:
        self.results = results  # each result's parameters: the secure weighted mean
        return None, {}

    def configure_evaluate(self, server_round: int, parameters: Parameters,
                           client_manager: ClientManager) -> list:
        return []

    def aggregate_evaluate(self, server_round: int, results: list,
                           failures: list) -> tuple[None, dict]:
        return None, {}

    def evaluate(self, server_round: int, parameters: Parameters) -> None:
        return None


def secagg_plus_sum(grid: Grid, context: Context, config: Config, round_index: int,
                    params: Params, nodes: list[int],
                    settings: dict[str, Any]) -> tuple[list[dict[str, float]], Params | None]:
    """One SecAgg+ round over `nodes` from `params` (`settings`: the fit config): the
    weights and losses of the clients whose masked updates were unmasked, and the sum of their
    contributions (None if the protocol halted, e.g. too few nodes left to unmask)."""
    agg, parameters = config.aggregation, to_parameters(params)
    strategy = CohortFit(grid, context.run_id, nodes, FitIns(parameters, settings))
    legacy = LegacyContext(context, ServerConfig(num_rounds=config.server.rounds,
                                                 round_timeout=config.flower.round_timeout),
                           strategy)
    legacy.state.array_records[MAIN_PARAMS_RECORD] = compat.parameters_to_arrayrecord(
        parameters, keep_input=True)
    legacy.state.config_records[MAIN_CONFIGS_RECORD] = ConfigRecord(
        {Key.CURRENT_ROUND: round_index, Key.START_TIME: time.time()})
    SecAggPlusWorkflow(
        num_shares=agg.secagg_num_shares,
        reconstruction_threshold=agg.secagg_reconstruction_threshold,
        max_weight=secagg_max_weight(config), clipping_range=agg.secagg_clipping_range,
        quantization_range=agg.secagg_quantization_range,
        modulus_range=agg.secagg_modulus_range,
        timeout=config.flower.round_timeout)(grid, legacy)
    if not strategy.results:
        return [], None
    mean = from_arrays(parameters_to_ndarrays(strategy.results[0][1].parameters), params)
    coefficients = sum(fit.num_examples for _, fit in strategy.results)
    reported = [{"weight": float(fit.metrics["weight"]), "loss": float(fit.metrics["loss"])}
                for _, fit in strategy.results]
    return reported, {k: v * coefficients for k, v in mean.items()}
