"""A new client's adaptation settings (FedAvg+FT's fine-tuning rate and steps, the MAML
family's test-time rate and steps, pFedHN's embedding fit) chosen after training, on the
meta-validation clients only, then meta-tested once: the tuning that a fair comparison of
fine-tuning and meta-learning needs (Chen et al. 2019, "A Closer Look at Few-shot
Classification", tune the baselines' adaptation as the meta-learners'), without selection on
the test set."""

from collections.abc import Sequence
from dataclasses import dataclass, replace
from itertools import product
from typing import Any

from fedmeta.build import LEARNERS, build_learner
from fedmeta.config import with_overrides
from fedmeta.engine.callbacks import score, selection_metric
from fedmeta.engine.experiment import Experiment
from fedmeta.engine.simulation import Simulation
from fedmeta.errors import UserError
from fedmeta.params import Params

SECTION = "learner."
KEYS = sorted({SECTION + key for cls in LEARNERS.values() for key in cls.adaptation})


@dataclass(frozen=True)
class Candidates:
    """`key` (a `learner.*` adaptation setting) and the values to choose among."""

    key: str
    values: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> "Candidates":
        """`KEY=V1,V2,...`; UserError unless KEY is an adaptation setting and two or more
        distinct values are given."""
        key, sep, values = text.partition("=")
        key, values = key.strip(), tuple(v.strip() for v in values.split(","))
        if not sep or key not in KEYS:
            raise UserError(f"--choose takes a new client's adaptation setting ({', '.join(KEYS)})"
                            f" as KEY=V1,V2,..., got {text!r}")
        if len(set(values)) < 2 or not all(values):
            raise UserError(f"--choose {key} needs two or more distinct values, got {text!r}")
        return cls(key, values)

    def overrides(self) -> list[str]:
        return [f"{self.key}={value}" for value in self.values]


def rate_setting(algorithm: str) -> str | None:
    """The `learner.*` rate a new client of `algorithm` adapts by, if it has one it does not
    learn (Meta-SGD learns its own; FedAvg and the personalized baselines adapt by none)."""
    rate = LEARNERS[algorithm].adaptation_rate
    return None if rate is None else SECTION + rate


def with_setting(experiment: Experiment, overrides: Sequence[str]) -> Experiment:
    """`experiment` with adaptation settings changed: its config and learner, nothing else
    (the datasets, pipeline and samplers read no adaptation setting)."""
    config = with_overrides(experiment.config.model_dump(mode="json"), list(overrides))
    train = experiment.train
    return replace(experiment, config=config, learner=build_learner(
        config, train.input_shape, train.num_classes, train.num_clients,
        num_items=train.num_items))


def choose_adaptation(experiment: Experiment, params: Params, states: Params | None,
                      *grid: Candidates) -> tuple[Experiment, list[str], list[dict[str, Any]]]:
    """`experiment` with the setting, of every combination of the `grid`'s values, under which
    its meta-validation clients scored `params` best (the run's selection metric; the first of
    equals), that setting's overrides and each combination's setting and meta-validation
    metrics, on `eval.episodes` episodes of the run's own validation stream. The meta-test
    clients are not read."""
    learner = type(experiment.learner)
    name = experiment.config.learner.algorithm
    keys = [candidates.key for candidates in grid]
    if len(set(keys)) < len(keys):
        raise UserError(f"--choose names a setting twice: {', '.join(keys)}")
    for key in keys:
        if key.removeprefix(SECTION) not in learner.adaptation:
            reads = ", ".join(SECTION + read for read in learner.adaptation) or "none"
            raise UserError(f"--choose {key}: {name} does not read it when a new client "
                            f"adapts (its adaptation settings: {reads})")
    if not Simulation(experiment).validates:
        raise UserError("--choose needs meta-validation clients, and this run has none: "
                        "choosing on the meta-test clients would be selection on the test set")
    metric = selection_metric(experiment.config)
    tried, best = [], None
    for overrides in product(*(candidates.overrides() for candidates in grid)):
        candidate = with_setting(experiment, overrides)
        metrics = Simulation(candidate).evaluate(params, experiment.config.eval.episodes,
                                                 on="val", states=states)
        setting = {key: getattr(candidate.config.learner, key.removeprefix(SECTION))
                   for key in keys}
        tried.append({"setting": setting, **metrics})
        if best is None or score(metric, metrics) > best[0]:
            best = score(metric, metrics), candidate, list(overrides)
    return best[1], best[2], tried
