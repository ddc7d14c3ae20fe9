"""The privacy section of a run's summary: the accountant's guarantees (user-level, and
sample-level for the smallest client) and the canary audit's estimate."""

from typing import Any

from fedmeta.engine.experiment import Experiment
from fedmeta.params import Params
from fedmeta.privacy.accountant import without_replacement_epsilon


def privacy_summary(experiment: Experiment, rounds: int, params: Params) -> dict[str, Any]:
    """The run's user-level DP guarantee (epsilon None: no noise, no guarantee) and, with
    canaries, the empirical estimate of the final `params`."""
    privacy, budget = experiment.config.privacy, experiment.privacy
    summary = {"epsilon": None, "clip_norm": privacy.clip_norm}
    if budget is not None:
        summary.update({"epsilon": budget.epsilon_after(rounds), "delta": budget.delta,
                        "noise_multiplier": budget.noise_multiplier,
                        "client_sample_rate": budget.sample_rate,
                        "accountant": budget.accountant,
                        "target_epsilon": privacy.target_epsilon or None})
    if privacy.sample_clip_norm is not None:
        train, learner = experiment.train, experiment.config.learner
        smallest = min(train.client_size(i) for i in range(train.num_clients))
        summary["sample_level"] = {
            "epsilon_smallest_client": without_replacement_epsilon(
                privacy.sample_noise_multiplier, learner.batch_size, smallest,
                learner.local_steps * rounds, privacy.delta),
            "smallest_client": smallest, "delta": privacy.delta,
            "clip_norm": privacy.sample_clip_norm,
            "noise_multiplier": privacy.sample_noise_multiplier,
            "assumes": "the client took part in every round"}
    if experiment.audit is not None:
        summary["audit"] = experiment.audit.estimate(experiment.learner.init_params(), params,
                                                     privacy.delta)
    return summary
