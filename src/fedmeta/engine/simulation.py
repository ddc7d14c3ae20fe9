"""The in-process simulation: sample a cohort, run each client's update, apply the server
pipeline, evaluate on the meta-validation clients, report to callbacks; the meta-test clients
are read once, after training (`fedmeta.engine.training`).

Every random draw comes from a generator seeded by (seed, round[, client]), so a run is a pure
function of its config: the same config and seed give identical metrics, and a run resumed
from a checkpoint continues exactly as if never stopped.
"""

import logging
import time
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any, Callable, Literal

import torch

from fedmeta.data import ClientData, ColdStartSampler, NotEnoughData
from fedmeta.data.federated import pool
from fedmeta.engine.client_state import CLIENTS, written
from fedmeta.engine.cohort import CohortUpdates, run_cohort
from fedmeta.engine.experiment import Experiment, client_sample_rate, learner_at_round
from fedmeta.engine.communication import round_bytes
from fedmeta.engine.sampling import poisson_cohort, uniform_cohort
from fedmeta.seeding import EVAL_STREAM, client_generator, seeded
from fedmeta.errors import UserError
from fedmeta.evaluation import (eligible_clients, meta_test, own_split_test, personal_splits,
                                 personalize)
from fedmeta.optim import apply_updates
from fedmeta.ratings import check_users, cold_start_test, learner_predictor
from fedmeta.params import Params, table_rows
from fedmeta.server import Round
from fedmeta.server.chain import ChainState

log = logging.getLogger(__name__)


def finite_rows(updates: CohortUpdates) -> torch.Tensor:
    """Which clients sent a finite update, weight and loss, and kept a finite personal state:
    bool [C], on the host (as the clients' ids)."""
    finite = torch.isfinite(updates.weights) & torch.isfinite(updates.losses)
    for v in [*updates.deltas.values(), *updates.states.values()]:
        finite &= torch.isfinite(v.flatten(1)).all(1)
    return finite.cpu()


def weighted_loss(losses: torch.Tensor, weights: torch.Tensor) -> float:
    """The clients' mean local losses averaged by their weights: a round's `loss` metric."""
    return float((losses * weights).sum() / weights.sum())


Held = Literal["test", "val"]  # which held-out clients an evaluation reads
# Their streams' keys after (seed, EVAL_STREAM): (episodes, personalization, pooled episodes).
# The meta-test's first two are those it had before meta-validation clients existed.
EVAL_KEYS: dict[Held, tuple[tuple[int, ...], ...]] = {"test": ((), (1,), (4,)),
                                                      "val": ((2,), (3,), (5,))}


def episode_stream(seed: int, on: Held) -> tuple[int, ...]:
    """The keys of the held-out clients' `on` episode stream; with own splits, client i
    draws from `seeded(*keys, i)` (`own_split_test`), wherever it is scored."""
    return (seed, EVAL_STREAM, *EVAL_KEYS[on][0])


@dataclass(frozen=True)
class Gathered:
    """A round's contributions as the server receives them, from whichever backend ran the
    clients: each client's update (`rows`), or only the sum a secure aggregation computed
    (`total`: the clients' updates after their `Pipeline.client` stages, each times its
    `coefficients` weight); the contributing clients' weights and mean local losses [C]; the
    round's metrics on who took part (`clients`, `skipped`, bytes, ...); and the personal
    states the rows' clients ended their rounds with (empty unless the learner
    `keeps_state`)."""

    weights: torch.Tensor
    losses: torch.Tensor
    metrics: dict[str, Any]
    rows: Round | None = None
    total: Params | None = None
    states: Params = field(default_factory=dict)

    @property
    def num_clients(self) -> int:
        return int(self.weights.numel())


class StopTraining(Exception):
    """Raised by a callback to end the run after the current round."""


Callback = Callable[[int, Params, dict[str, Any], dict[str, Any]], None]


class Simulation:
    def __init__(self, experiment: Experiment) -> None:
        self.experiment = experiment
        self.config = experiment.config

    def cohort(self, round_index: int) -> torch.Tensor:
        server, train = self.config.server, self.experiment.train
        generator = seeded(self.config.seed, round_index)
        if server.sampling == "poisson":
            rate = client_sample_rate(self.config, train.num_clients)
            return poisson_cohort(train.num_clients, rate, generator)
        return uniform_cohort(train.num_clients, server.clients_per_round, generator)

    def round(self, round_index: int, params: Params,
              server_state: dict[str, Any]) -> tuple[Params, dict[str, Any], dict[str, Any]]:
        """One federated round, whatever the backend: `gather` the cohort's contributions
        (the one seam between backends), then the server's step. The round goes on with the
        clients that contributed; with fewer than `server.min_clients` the model stays as it
        was, unless DP noise is added: a DP round is released whatever the clients did, so
        that whether it runs does not depend on their data. Clients that keep personal
        state keep what their round left them if the round is released; a round that is not
        leaves their states as it leaves the model."""
        start = time.perf_counter()
        personal = server_state.get(CLIENTS)
        gathered = self.gather(round_index, params, personal)
        metrics, pipeline = gathered.metrics, self.experiment.pipeline
        rows = self.server_rows(round_index, params, gathered)
        if self.releases(gathered.num_clients):
            if rows is None:  # a secure sum: the stages after the aggregator
                rnd, server_state = pipeline.apply_to_sum(
                    gathered.total, gathered.weights, self.config.privacy.clip_norm, server_state)
            else:
                rnd, server_state = pipeline.apply(rows, server_state)
            params = apply_updates(params, rnd.deltas)
            if personal is not None:
                server_state = ChainState({**server_state, CLIENTS: written(
                    personal, gathered.rows.clients, gathered.states)})
        else:
            metrics["aborted"] = (f"{gathered.num_clients} clients reported, fewer than "
                                  f"server.min_clients ({self.config.server.min_clients}): "
                                  "model unchanged")
        if gathered.num_clients:
            metrics["loss"] = weighted_loss(gathered.losses, gathered.weights)
        metrics["seconds"] = time.perf_counter() - start
        return params, server_state, metrics

    def releases(self, num_clients: int) -> bool:
        """Whether a round of `num_clients` contributions updates the model: at least
        `server.min_clients` of them, or any number under DP noise."""
        return (num_clients >= self.config.server.min_clients
                or self.experiment.privacy is not None)

    def gather(self, round_index: int, params: Params,
               states: Params | None = None) -> Gathered:
        """The round's contributions, computed here: each client's update (`reports`), from
        its personal state in `states` (the table of `fedmeta.engine.client_state`, if the
        learner keeps one)."""
        updates, clients, metrics = self.reports(round_index, params, states)
        return Gathered(updates.weights, updates.losses, metrics,
                        rows=Round(updates.deltas, updates.weights, clients=clients),
                        states=updates.states)

    def server_rows(self, round_index: int, params: Params, gathered: Gathered) -> Round | None:
        """What the server pipeline takes from gathered rows: each client's update as a delta
        of the server's `params` (`Learner.server_round`), with the audit's canaries sampled
        this round (their count in the round's metrics); None for a secure sum."""
        if gathered.rows is None:
            return None
        rows = self.experiment.learner.server_round(params, gathered.rows)
        if self.experiment.audit is not None:
            rows, gathered.metrics["canaries"] = self.with_canaries(round_index, rows)
        return rows

    def reports(self, round_index: int, params: Params, states: Params | None = None
                ) -> tuple[CohortUpdates, torch.Tensor, dict[str, Any]]:
        """The round's cohort, less the clients that drop out or miss the deadline; their
        updates, as malicious clients send them, less any that failed or are not finite, and
        the ids of the clients that sent them (int64 [C]); and the round's metrics on who took
        part, who was left out and why, and the bytes sent each way (`round_bytes`)."""
        cohort = self.cohort(round_index).tolist()
        faults, attack = self.experiment.faults, self.experiment.attack
        absent = faults.absent(round_index, cohort) if faults is not None else {}
        present = [c for c in cohort if c not in absent]
        updates = self.client_updates(round_index, params, present, states)
        model = self.experiment.learner.client_model(params)
        failed = {present[p]: reason for p, reason in updates.failures.items()}
        ids = torch.tensor(present, dtype=torch.int64)[updates.positions]
        metrics: dict[str, Any] = {"round": round_index}
        if attack is not None:
            malicious = attack.malicious[ids]
            updates = replace(updates, deltas=attack.corrupt(updates.deltas, malicious,
                                                             round_index))
            metrics["malicious"] = int(malicious.sum())
        finite = finite_rows(updates)
        if not finite.all():  # copy the rows only when some are left out
            failed.update({int(c): "non-finite update" for c in ids[~finite]})
            updates, ids = updates.select(finite), ids[finite]
        for client, reason in failed.items():
            log.warning("round %d: client %d left out: %s", round_index, client, reason)
        metrics.update({"clients": updates.num_clients, "skipped": updates.skipped,
                        "dropped": len(absent), "failed": len(failed),
                        **round_bytes(self.config, model, len(cohort), updates.num_clients)})
        if absent or failed:
            metrics["excluded"] = {str(c): reason for c, reason in {**absent, **failed}.items()}
        return updates, ids, metrics

    def client_updates(self, round_index: int, params: Params, cohort: list[int],
                       states: Params | None = None) -> CohortUpdates:
        """The cohort's local rounds, computed here (`fedmeta.engine.cohort`) from what the
        learner sends each client (`Learner.client_params`) and their personal `states`; a
        malicious client trains with its poisoned learner and data; all at the round's local
        rate (`learner_at_round`)."""
        train, run, attack = self.experiment.train, self.config.run, self.experiment.attack
        learner = learner_at_round(self.experiment.learner, self.config, round_index)
        learners = [learner] * len(cohort)
        clients = [train.client(c) for c in cohort]
        if attack is not None:
            for i, client in enumerate(cohort):
                if attack.is_malicious(client):
                    learners[i], clients[i] = attack.poison(learners[i], clients[i],
                                                            train.num_classes)
        sent = learner.client_params(params, torch.tensor(cohort, dtype=torch.int64))
        return run_cohort(learners, sent, clients,
                          [client_generator(self.config.seed, round_index, c) for c in cohort],
                          run.execution, run.chunk_size, per_client=True,
                          states=table_rows(states, cohort), precision=run.precision)

    def with_canaries(self, round_index: int, rnd: Round) -> tuple[Round, int]:
        """The round's updates with those of the audit's canaries sampled this round, each
        weighted as the round's average client (or 1), with ids -1, -2, ... that no client
        has; and how many joined."""
        canaries = self.experiment.audit.round_updates(round_index)
        if canaries is None:
            return rnd, 0
        count = len(next(iter(canaries.values())))
        deltas, weights = rnd.deltas, rnd.weights
        weight = weights.mean() if len(weights) else weights.new_tensor(1.0)
        return replace(rnd, deltas={k: torch.cat([deltas[k], canaries[k].to(deltas[k])])
                                    for k in deltas},
                       weights=torch.cat([weights, weight.expand(count)]),
                       clients=torch.cat([rnd.clients, -torch.arange(1, count + 1)])), count

    @cached_property
    def test_clients(self) -> list[ClientData]:
        """The meta-test clients, materialized once, for the run's one final evaluation."""
        test = self.experiment.test
        return [test.client(i) for i in range(test.num_clients)]

    @cached_property
    def validation_clients(self) -> list[ClientData]:
        """The meta-validation clients, materialized once for every evaluation during training."""
        validation = self.experiment.validation
        return [validation.client(i) for i in range(validation.num_clients)]

    @property
    def validates(self) -> bool:
        """Whether the run has meta-validation clients (or validation examples of its own
        clients) to evaluate on during training."""
        validation = self.experiment.validation
        return any(validation.client_size(i) for i in range(validation.num_clients))

    def check_validation(self) -> None:
        """UserError if early stopping is configured without meta-validation clients: it may
        read only them (never the meta-test clients)."""
        if self.config.eval.patience and not self.validates:
            raise UserError("config error: eval.patience stops on the meta-validation clients, "
                            "and this run has none (data.validation_fraction, or nodes with "
                            "validation = true)")

    def check_secagg_weights(self, sizes: list[int]) -> None:
        """UserError if, under SecAgg+'s sample-weighted mean, a client's weight (its example
        count, `sizes`) exceeds `aggregation.secagg_max_weight`: the protocol would cap it
        and the sum would come out wrong."""
        agg = self.config.aggregation
        if agg.secure != "secagg+" or self.experiment.pipeline.denominator is not None:
            return
        if max(sizes, default=0) > agg.secagg_max_weight:
            raise UserError(f"config error: a client holds {max(sizes)} examples, more than "
                            f"aggregation.secagg_max_weight ({agg.secagg_max_weight:g}), the "
                            "largest weight SecAgg+ sums correctly: raise it")

    def check_data(self) -> None:
        """UserError unless some training client can supply a local round's data and the
        held-out clients (meta-validation and meta-test) can be evaluated (and personalized)
        as configured: found before a run starts, not as rounds that all skip or at its first
        evaluation. The scan stops at the first able training client (usually the first)."""
        self.check_validation()
        train, learner = self.experiment.train, self.experiment.learner
        self.check_secagg_weights([train.client_size(i) for i in range(train.num_clients)])
        for i in range(train.num_clients):
            try:
                learner.local_batches(train.client(i), client_generator(self.config.seed, 0, i))
                break
            except NotEnoughData as error:
                reason = error
        else:
            raise UserError(f"no training client can supply a local round: {reason}")
        ev = self.config.eval
        if self.experiment.held_out == "splits":  # every client is scored on its own classes
            if learner.head == "ways":  # before training, not at the first evaluation
                learner.check_own_classes(max(len(train.client(i).classes)
                                              for i in range(train.num_clients)))
            return
        held_out = [self.test_clients] + ([self.validation_clients] if self.validates else [])
        sampler = self.experiment.eval_sampler
        for clients in held_out:
            if isinstance(sampler, ColdStartSampler):
                check_users(clients, sampler)
                continue
            eligible_clients(clients, sampler)
            if ev.personalization_episodes:
                personal_splits(clients, ev.ways, ev.shots)

    def evaluate(self, params: Params, episodes: int, per_client: bool = False,
                 on: Held = "test", states: Params | None = None) -> dict[str, Any]:
        """Meta-test on the held-out clients `on` ("test": the meta-test clients, keys
        `test_*`; "val": the meta-validation clients, `val_*`) and, when configured, their
        personalization on their own support/query splits (`personal_*`, `val_personal_*`)
        and episodes of all of them pooled into one (`*_pooled_accuracy`, `eval.pooled`);
        with `per_client`, each client's accuracy too (`*_per_client_accuracy`). Each side
        draws its episodes from a stream of its own, the same at every evaluation. When the
        held-out data are the training clients' own splits, each client's held-out examples
        `on` are scored by `own_split_test`, from its personal state in `states`. New users
        of a rating dataset are scored once each (`fedmeta.ratings.cold_start_test`: MAE,
        RMSE, NDCG@10), `episodes` unused."""
        ev, learner = self.config.eval, self.experiment.learner
        _, personal_keys, pooled_keys = EVAL_KEYS[on]
        episodes_keys = episode_stream(self.config.seed, on)
        if self.experiment.held_out == "splits":
            held = self.experiment.test if on == "test" else self.experiment.validation
            result, pooled = own_split_test(learner, params, states, self.experiment.train, held,
                                            ev.shots, episodes_keys)
            return {f"{on}_{key}": value for key, value in
                    {**result.as_dict(per_client), "pooled_accuracy": pooled}.items()}
        clients = self.test_clients if on == "test" else self.validation_clients
        if isinstance(self.experiment.eval_sampler, ColdStartSampler):  # every user, once
            result = cold_start_test(learner_predictor(learner, params), clients,
                                     self.experiment.eval_sampler)
            return {f"{on}_{key}": value for key, value in result.as_dict(per_client).items()}
        result = meta_test(learner, params, clients, self.experiment.eval_sampler, episodes,
                           seeded(*episodes_keys))
        metrics = {f"{on}_{key}": value for key, value in result.as_dict(per_client).items()}
        if ev.pooled:  # the centralized benchmarks' protocol: one client of all their classes
            result = meta_test(learner, params, [pool(clients)], self.experiment.eval_sampler,
                               episodes, seeded(self.config.seed, EVAL_STREAM, *pooled_keys))
            metrics.update({f"{on}_pooled_accuracy": result.accuracy,
                            f"{on}_pooled_ci95": result.ci95})
        if ev.personalization_episodes:
            result = personalize(learner, params, clients, ev.ways, ev.shots,
                                 ev.personalization_episodes,
                                 seeded(self.config.seed, EVAL_STREAM, *personal_keys))
            prefix = "personal_" if on == "test" else "val_personal_"
            metrics.update({f"{prefix}{key}": value
                            for key, value in result.as_dict(per_client).items()})
        return metrics

    def after_round(self, round_index: int, params: Params, metrics: dict[str, Any],
                    states: Params | None = None) -> None:
        """What the loop adds to a round's `metrics`, whoever ran the round: the privacy spent
        (`epsilon`, with user-level DP) and every `eval.every` rounds the meta-validation
        clients' scores (never the meta-test clients'), with their personal `states`."""
        if self.experiment.privacy is not None:
            metrics["epsilon"] = self.experiment.privacy.epsilon_after(round_index)
        every = self.config.eval.every
        if every and round_index % every == 0 and self.validates:
            metrics.update(self.evaluate(params, self.config.eval.episodes, on="val",
                                         states=states))

    def run(self, callbacks: list[Callback] = (), params: Params | None = None,
            server_state: dict[str, Any] | None = None, start_round: int = 1) -> Params:
        """Rounds `start_round`..`server.rounds`, evaluating on the meta-validation clients
        every `eval.every` rounds (never on the meta-test clients), until
        the last round, a callback raises `StopTraining`, or the next round would exceed
        `privacy.target_epsilon`; with user-level DP, `epsilon` is in every round's metrics."""
        if params is None:
            params = self.experiment.learner.init_params()
        if server_state is None:
            server_state = self.experiment.initial_state(params)
        budget = self.experiment.privacy
        for round_index in range(start_round, self.config.server.rounds + 1):
            if budget is not None and not budget.allows(round_index):
                break  # the round would spend more than privacy.target_epsilon
            params, server_state, metrics = self.round(round_index, params, server_state)
            self.after_round(round_index, params, metrics, server_state.get(CLIENTS))
            try:
                for callback in callbacks:
                    callback(round_index, params, server_state, metrics)
            except StopTraining:
                break
        return params
