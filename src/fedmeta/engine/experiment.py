"""What a run is made of, as the engine takes it: the config, the clients (training,
meta-validation, meta-test), the learner, the server pipeline and the optional parts (privacy
accountant, audit, attack, faults); and the rules the config sets for every round (the Poisson
sample rate, the learning-rate schedules). `fedmeta.build` makes one from a config."""

from dataclasses import dataclass
from typing import Any, Literal

from fedmeta.attacks import Attack
from fedmeta.config import Config, Scheduled
from fedmeta.data import FederatedDataset, TaskSampler
from fedmeta.engine.client_state import CLIENTS, initial_states
from fedmeta.engine.faults import Faults
from fedmeta.learners.base import Learner
from fedmeta.optim import Schedule, cosine_decay, step_decay
from fedmeta.params import Params
from fedmeta.privacy.accountant import PrivacyBudget
from fedmeta.privacy.audit import CanaryAudit
from fedmeta.server.pipeline import Pipeline


@dataclass
class Experiment:
    config: Config
    train: FederatedDataset
    validation: FederatedDataset
    test: FederatedDataset
    learner: Learner
    pipeline: Pipeline
    eval_sampler: TaskSampler
    privacy: PrivacyBudget | None = None
    audit: CanaryAudit | None = None
    attack: Attack | None = None
    faults: Faults | None = None
    # what held-out data are: other clients ("clients": meta-validation and meta-test
    # clients), or the training clients' own splits ("splits": client i of `validation` and
    # `test` holds client i of `train`'s held-out examples, as PFLlib's benchmarks split them)
    held_out: Literal["clients", "splits"] = "clients"
    # whether the run keeps its clients' personal states (a simulation; a deployment's nodes
    # keep their own)
    holds_client_states: bool = True

    def initial_state(self, params: Params) -> dict[str, Any]:
        """The run's state before its first round: the server pipeline's and, for a learner
        whose clients keep personal state, theirs (`fedmeta.engine.client_state`) where the
        run holds them."""
        state = self.pipeline.init(params)
        if self.learner.keeps_state and self.holds_client_states:
            state[CLIENTS] = initial_states(self.learner, self.train.num_clients)
        return state


def client_sample_rate(config: Config, num_clients: int) -> float:
    """A client's chance to join a round under Poisson sampling (expected cohort / clients)."""
    return min(1.0, config.server.clients_per_round / num_clients)


def build_schedule(section: Scheduled, rounds: int) -> Schedule | None:
    """The learning-rate schedule `section` (the learner's or the server's) configures, for a
    run of `rounds` rounds (None: constant)."""
    if section.lr_schedule == "step":
        return step_decay(section.lr_decay_every, section.lr_decay)
    if section.lr_schedule == "cosine":
        return cosine_decay(rounds)
    return None


def learner_at_round(learner: Learner, config: Config, round_index: int) -> Learner:
    """`learner` as it trains in round `round_index` (1, 2, ...): its local rate scaled by
    `learner.lr_schedule` (in simulation and on a Flower node alike)."""
    schedule = build_schedule(config.learner, config.server.rounds)
    if schedule is None:
        return learner
    return learner.at_local_rate(schedule(round_index - 1))
