"""A training run from start to summary, whoever computes the clients' updates (the
in-process simulation or Flower's SuperNodes): rounds with their callbacks, the final
meta-test and `summary.json` in the run directory."""

import time

from fedmeta.config import Config
from fedmeta.engine.callbacks import (Checkpointer, EarlyStopping, MetricsLogger, ProgressBar,
                                      TimeBudget)
from fedmeta.engine.rundir import RunDirectory
from fedmeta.engine.simulation import Simulation
from fedmeta.privacy.summary import privacy_summary


def training_callbacks(config: Config, run: RunDirectory) -> tuple[list, Checkpointer]:
    checkpointer = Checkpointer(run, config.run.checkpoint_every)
    callbacks = [MetricsLogger(run), checkpointer]
    if config.eval.patience:
        callbacks.append(EarlyStopping(config.eval.patience))
    if config.run.time_budget_seconds:
        callbacks.append(TimeBudget(config.run.time_budget_seconds))
    return callbacks, checkpointer


def train_and_summarize(simulation: Simulation, run: RunDirectory, progress: bool) -> dict:
    """Train `simulation`'s experiment into `run`, meta-test the result, write and print the
    summary."""
    experiment = simulation.experiment
    config = experiment.config
    callbacks, checkpointer = training_callbacks(config, run)
    start = time.perf_counter()
    if progress:
        with ProgressBar(config.server.rounds) as bar:
            params = simulation.run(callbacks + [bar])
    else:
        params = simulation.run(callbacks)
    checkpointer.finish()
    train_seconds = time.perf_counter() - start
    result = {k.removeprefix("test_"): v
              for k, v in simulation.evaluate(params, config.eval.final_episodes).items()}
    ev, rounds = config.eval, checkpointer.last[0]
    summary = {
        "name": config.name, "rounds": rounds, "train_seconds": train_seconds,
        "task": f"{ev.ways}-way {ev.shots}-shot", "test_clients": experiment.test.num_clients,
        "meta_test": result, "privacy": privacy_summary(experiment, rounds, params),
    }
    run.write_summary(summary)
    if not result:
        print(f"no held-out clients to meta-test; run directory {run.path}")
        return summary
    print(f"meta-test accuracy on {summary['test_clients']} unseen clients, {summary['task']}: "
          f"{100 * result['accuracy']:.2f}% ± {100 * result['ci95']:.2f}% (95% CI over "
          f"{result['episodes']} episodes); run directory {run.path}")
    return summary
