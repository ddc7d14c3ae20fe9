"""A training run from start to summary, whoever computes the clients' updates (the
in-process simulation or Flower's SuperNodes): rounds with their callbacks, the final
meta-test and `summary.json` in the run directory."""

import time
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

from fedmeta.config import Config
from fedmeta.device import describe_device
from fedmeta.engine.callbacks import (BestRound, Checkpointer, EarlyStopping, MetricsLogger,
                                      ProgressBar, TensorBoardLogger, TimeBudget,
                                      selection_metric)
from fedmeta.engine.checkpoint import Selected
from fedmeta.engine.client_state import CLIENTS
from fedmeta.engine.privacy_summary import privacy_summary
from fedmeta.engine.rundir import RunDirectory
from fedmeta.engine.simulation import Callback, Simulation, StopTraining
from fedmeta.errors import UserError
from fedmeta.params import Params
from fedmeta.ratings import rating_line


@dataclass(frozen=True)
class Start:
    """Where training starts: after round `round` (0: a new run) from `params` and
    `server_state` (None: initialized), `history` the metrics of the rounds before, `selected`
    the round model selection had chosen by then, its params and its clients' personal
    states (None: none yet)."""

    round: int = 0
    params: Params | None = None
    server_state: dict[str, Any] | None = None
    history: tuple[dict[str, Any], ...] = ()
    selected: Selected | None = None


def restored_selection(config: Config, start: Start) -> BestRound:
    """Model selection as it stood after `start.round`: its choice replayed from the logged
    metrics, the chosen params from the checkpoint. UserError if the two disagree."""
    selection = BestRound(selection_metric(config))
    for metrics in start.history:
        selection(metrics["round"], None, {}, metrics)
    chosen = start.selected[0] if start.selected else 0
    if selection.round != chosen:
        raise UserError(f"the logged metrics select round {selection.round}, the checkpoint "
                        f"holds round {chosen}'s params as selected")
    if start.selected:
        selection.params, selection.states = start.selected[1:]
    return selection


def stopping_callbacks(config: Config, start: Start) -> list[Callback]:
    """Early stopping, its state rebuilt from `start.history` so a resumed run stops where it
    would have (StopTraining if it already had), and the time budget (of this process)."""
    callbacks: list[Callback] = []
    if config.eval.patience:
        early_stopping = EarlyStopping(config.eval.patience, selection_metric(config))
        for metrics in start.history:
            early_stopping(metrics["round"], start.params, start.server_state, metrics)
        callbacks.append(early_stopping)
    if config.run.time_budget_seconds:
        callbacks.append(TimeBudget(config.run.time_budget_seconds))
    return callbacks


def training_callbacks(config: Config, run: RunDirectory, start: Start,
                       checkpointer: Checkpointer, progress: bool,
                       stack: ExitStack) -> list[Callback]:
    """The callbacks of the rounds after `start`, those to close entered into `stack`: metrics
    log, model selection, checkpoints (which hold the selection), TensorBoard
    (`run.tensorboard`), stopping (`stopping_callbacks`, which raises StopTraining if the run
    had stopped) and the progress bar. A callback that stops the
    run ends the round's callbacks: those after it miss the last round."""
    stopping = stopping_callbacks(config, start)  # first: a stopped run opens no log
    callbacks: list[Callback] = [MetricsLogger(run), checkpointer.selection, checkpointer]
    if config.run.tensorboard:
        callbacks.append(stack.enter_context(TensorBoardLogger(run.path / "tensorboard",
                                                               start.round + 1)))
    callbacks += stopping
    if progress:
        callbacks.append(stack.enter_context(ProgressBar(config.server.rounds, start.round + 1)))
    return callbacks


def train(simulation: Simulation, run: RunDirectory, start: Start,
          progress: bool) -> tuple[Params, Params | None, int, BestRound]:
    """The rounds after `start.round`, logged and checkpointed into `run`: the final params
    and clients' personal states (None: the learner keeps none), the last round and the model
    selection."""
    config = simulation.config
    checkpointer = Checkpointer(run, config.run.checkpoint_every, start.round,
                                restored_selection(config, start))
    with ExitStack() as stack:
        try:
            callbacks = training_callbacks(config, run, start, checkpointer, progress, stack)
        except StopTraining:  # stopped early, then killed before its summary
            return (start.params, last_states(checkpointer, start), start.round,
                    checkpointer.selection)
        params = simulation.run(callbacks, start.params, start.server_state, start.round + 1)
    checkpointer.finish()
    return params, last_states(checkpointer, start), checkpointer.round, checkpointer.selection


def last_states(checkpointer: Checkpointer, start: Start) -> Params | None:
    """The clients' personal states after the last round run (the checkpoint's, if this
    process ran none); None: the learner keeps none."""
    state = checkpointer.last[1] if checkpointer.last else start.server_state or {}
    return state.get(CLIENTS)


def train_and_summarize(simulation: Simulation, run: RunDirectory, progress: bool,
                        start: Start = Start()) -> dict:
    """Train `simulation`'s experiment into `run` from `start`, meta-test the model of the
    round the meta-validation clients selected (the last round's without them) once, on the
    meta-test clients, write and print the summary."""
    experiment = simulation.experiment
    config = experiment.config
    begin = time.perf_counter()
    params, states, rounds, selection = train(simulation, run, start, progress)
    train_seconds = time.perf_counter() - begin
    if selection.params is not None:
        params, states, selected = selection.params, selection.states, {
            "round": selection.round, "rule": f"best {selection.metric}",
            **{k.removeprefix("val_"): v for k, v in selection.metrics.items()}}
    else:
        selected = {"round": rounds, "rule": "last round (no meta-validation evaluation)"}
    result = {k.removeprefix("test_"): v
              for k, v in simulation.evaluate(params, config.eval.final_episodes,
                                              per_client=True, states=states).items()}
    splits = experiment.held_out == "splits"
    task = ("each training client's own test split" if splits
            else str(experiment.eval_sampler))
    summary = {
        "name": config.name, "rounds": rounds, "train_seconds": train_seconds,
        "device": describe_device(experiment.learner.device),
        "task": task, "test_clients": experiment.test.num_clients,
        "validation_clients": experiment.validation.num_clients, "selected": selected,
        "meta_test": result, "privacy": privacy_summary(experiment, rounds, params),
    }
    run.write_summary(summary)
    if not result:
        print(f"no held-out clients to meta-test; run directory {run.path}")
        return summary
    chosen = (f"of round {selected['round']}'s model, selected by {selected['rule']}, trained on "
              f"{summary['device']}; run directory {run.path}")
    if config.data.rates:
        print(f"{task}: {rating_line(result)} {chosen}")
        return summary
    eligible = result.get("eligible_clients", summary["test_clients"])
    unseen = (f"{eligible} unseen clients" if eligible == summary["test_clients"] else
              f"{eligible} of {summary['test_clients']} unseen clients (those with data for "
              "its episodes)")
    scored = (f"accuracy on {result['clients']} training clients' own test splits (mean over "
              f"clients; pooled {100 * result['pooled_accuracy']:.2f}%): " if splits else
              f"meta-test accuracy on {unseen}, {task}: ")
    spread = (f"clients, {result['episodes']} examples" if splits
              else f"{result['episodes']} episodes")
    print(f"{scored}{100 * result['accuracy']:.2f}% ± {100 * result['ci95']:.2f}% (95% CI over "
          f"{spread}) {chosen}")
    if "pooled_accuracy" in result and not splits:
        print(f"the same model on {result['episodes']} episodes of the {summary['test_clients']} "
              f"meta-test clients pooled into one (the centralized benchmarks' protocol): "
              f"{100 * result['pooled_accuracy']:.2f}% ± {100 * result['pooled_ci95']:.2f}%")
    return summary
