"""Resuming a stopped run (`fedmeta run --resume`): its latest checkpoint restored into what its
config builds and its metrics trimmed to that checkpoint's round, so that it goes on exactly as
if it had never stopped. Everything is checked before anything in the run directory changes."""

from pathlib import Path

from fedmeta.build import Experiment, build_experiment
from fedmeta.config import load_config
from fedmeta.engine.checkpoint import Selected, read_checkpoint, restore_read, restore_selected
from fedmeta.engine.rundir import RunDirectory
from fedmeta.engine.training import Start, restored_selection
from fedmeta.errors import UserError
from fedmeta.params import Params


def restore_run(run: RunDirectory, checkpoint: Path, device: str | None = None,
                overrides: list[str] = ()) -> tuple[Experiment, Params, dict, int,
                                                    Selected | None]:
    """What the config of `run`, with `overrides` after it, builds on `device` (None: its
    `run.device`; checkpoints hold host tensors, so any device reads any run's), with
    `checkpoint` restored into it: (experiment, params, run state, the checkpoint's round, the
    round selected by then with its params and clients' personal states, if any)."""
    experiment = build_experiment(load_config(
        run.config_path, [*overrides, *([f"run.device={device}"] if device else [])]))
    return (experiment, *restored(experiment, checkpoint))


def restored(experiment: Experiment, checkpoint: Path) -> tuple[Params, dict, int,
                                                                Selected | None]:
    """`checkpoint` restored into `experiment`: (params, run state, the checkpoint's round, the
    round selected by then with its params and clients' personal states, if any)."""
    initial = experiment.learner.init_params()
    state = experiment.initial_state(initial)
    read = read_checkpoint(checkpoint)  # once: params, state and selection
    return (*restore_read(read, checkpoint, initial, state),
            restore_selected(read, checkpoint, initial, state))


def resume(path: Path, device: str | None = None) -> tuple[Experiment, RunDirectory, Start]:
    """The experiment of the stopped run in `path`, on `device` (None: its config's), its
    directory and where it goes on from; UserError, with the directory untouched, if it
    cannot go on."""
    run = RunDirectory.open(path, "run --resume")
    if run.summary_path.exists():
        raise UserError(f"run {path} has already finished (it has a summary.json)")
    checkpoint = run.latest_checkpoint()
    experiment, params, server_state, round_index, selected = restore_run(run, checkpoint,
                                                                          device)
    config = experiment.config
    if round_index > config.server.rounds:
        raise UserError(f"checkpoint {checkpoint} is of round {round_index}, past the config's "
                        f"server.rounds ({config.server.rounds})")
    start = Start(round_index, params, server_state, tuple(run.logged_metrics(round_index)),
                  selected)
    restored_selection(config, start)  # the last check: the metrics and the checkpoint agree
    run.trim_metrics(round_index)  # the only change
    return experiment, run, start
