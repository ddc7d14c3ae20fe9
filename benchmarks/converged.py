"""Converged, honestly selected accuracy of every algorithm (issue 16).

Each (algorithm, setting) run trains until its meta-validation accuracy has not improved for
`--patience` evaluations (one every `--every` rounds), or `--max-hours`, whichever comes first;
the round with the best meta-validation accuracy is kept and meta-tested once, on
`--episodes` episodes of clients no one trained or selected on (Omniglot's 20 evaluation
alphabets, FEMNIST's held-out writers). Each run is a run directory under `--runs`: a stopped
sweep started again resumes every unfinished run where it stopped (`fedmeta run --resume`), and
reads the finished ones' summaries. Settings and hyperparameters are `accuracy.py`'s, with
`--set` overrides after them (a recipe: e.g. wider training episodes and a cosine rate), which
each result row records; the published centralized numbers stand beside the federated ones,
and for Omniglot so does the kept model's accuracy on the published numbers' episodes, the
evaluation alphabets pooled (`eval.pooled`), since a new client here is one alphabet.
`--fit-seconds` sizes a new run's schedule to the machine it runs on (a GPU's minutes, a CPU
session's hours): `server.rounds` from the timing of its first rounds.

    python benchmarks/converged.py --data ../shared/data --runs runs/converged \\
        --settings omniglot-5w1s --algorithms protonet maml --out results.jsonl \\
        --set task.ways=20 learner.lr_schedule="'cosine'" server.rounds=2000
"""

import argparse
import json
import os
import shutil
from pathlib import Path
from typing import NamedTuple

import torch

from accuracy import ALGORITHMS, COMMON, PUBLISHED, SETTINGS  # beside this script
from fedmeta.build import build_experiment
from fedmeta.config import Config, load_config, with_overrides
from fedmeta.resume import resume
from fedmeta.engine.rundir import RunDirectory
from fedmeta.engine.simulation import Simulation
from fedmeta.engine.training import train_and_summarize
from parallel import add_result_options, printed_table, run_jobs


class Job(NamedTuple):
    """One (algorithm, setting) run and how to train, select and meta-test it."""

    algorithm: str
    setting: str
    data_dir: str
    runs: Path
    every: int
    patience: int
    hours: float
    episodes: int
    threads: int
    recipe: list[str]
    fit_seconds: float | None  # size server.rounds to this many seconds of training


def seconds_per_round(config: Config, rounds: int = 3) -> float:
    """A training round's wall-clock seconds on this machine: the mean of `rounds` rounds after
    a first one (a GPU's kernels and caches warm up in it); no evaluation, nothing kept."""
    simulation = Simulation(build_experiment(config))
    params = simulation.experiment.learner.init_params()
    state = simulation.experiment.initial_state(params)
    params, state, _ = simulation.round(1, params, state)
    seconds = 0.0
    for round_index in range(2, rounds + 2):
        params, state, metrics = simulation.round(round_index, params, state)
        seconds += metrics["seconds"]
    return seconds / rounds


def fitted(config: Config, seconds: float, every: int) -> Config:
    """`config` with `server.rounds` the multiple of `every` (at least one) whose training
    takes about `seconds` here, so that a schedule over the rounds (a cosine) ends in time."""
    rounds = int(seconds / seconds_per_round(config)) // every * every
    return with_overrides(config.model_dump(mode="json"), [f"server.rounds={max(every, rounds)}"])


def run_one(job: Job) -> dict:
    """Train (or resume, or read) one run directory to its selected, meta-tested model."""
    algorithm, setting, data_dir, runs, every, patience, hours, episodes, threads, recipe, \
        fit_seconds = job
    torch.set_num_threads(threads)
    path = Path(runs) / f"{algorithm}-{setting}"
    run = RunDirectory(path)
    if not run.summary_path.exists():
        if any(run.checkpoints.glob("round_*.safetensors")):
            experiment, run, start = resume(path)
            train_and_summarize(Simulation(experiment), run, False, start)
        else:  # never started, or stopped before its first checkpoint: nothing to keep
            shutil.rmtree(path, ignore_errors=True)
            dataset = "omniglot" if setting.startswith("omniglot") else "femnist"
            config = load_config(None, COMMON + SETTINGS[setting] + ALGORITHMS[algorithm] + [
                f"learner.algorithm='{algorithm}'", f"name='{algorithm}-{setting}'",
                f"data.path='{os.path.join(data_dir, dataset + '.npz')}'",
                f"eval.every={every}", f"eval.patience={patience}", "eval.episodes=300",
                f"eval.final_episodes={episodes}", f"run.checkpoint_every={every}",
                f"run.time_budget_seconds={3600 * hours}",
                # Omniglot: the published numbers' episodes too, the alphabets pooled
                f"eval.pooled={str(dataset == 'omniglot').lower()}", *recipe])
            if fit_seconds is not None:
                config = fitted(config, fit_seconds, every)
            train_and_summarize(Simulation(build_experiment(config)),
                                RunDirectory.create(config, path), False)
    summary = json.loads(run.summary_path.read_text())
    meta_test = summary["meta_test"]
    return {"algorithm": algorithm, "setting": setting, "rounds": summary["rounds"],
            "schedule_rounds": load_config(run.config_path).server.rounds,
            "selected_round": summary["selected"]["round"],
            "val_accuracy": summary["selected"].get("accuracy"),
            "train_seconds": round(summary["train_seconds"], 1), "device": summary["device"],
            "recipe": list(recipe),
            **{f"test_{k}": v for k, v in meta_test.items()
               if k not in ("per_client_accuracy", "pooled_accuracy", "pooled_ci95")},
            **{k: meta_test[k] for k in ("pooled_accuracy", "pooled_ci95") if k in meta_test}}


def of_schedule(row: dict) -> str:
    """' of N' where the run stopped before its schedule's N rounds (patience, or the cap)."""
    schedule = row.get("schedule_rounds", row["rounds"])
    return f" of {schedule}" if schedule != row["rounds"] else ""


def table(results: list[dict]) -> str:
    """One table per setting: meta-test accuracy ± 95% CI of the selected round, the
    published centralized number, rounds (selected / trained), wall time, device."""
    out = []
    for setting in SETTINGS:
        rows = [r for r in results if r["setting"] == setting]
        if not rows:
            continue
        out += [f"\n{setting}\n", "| algorithm | meta-test % ± 95% CI | alphabets pooled % "
                "| published (centralized) | selected / trained rounds | training wall time | "
                "device | recipe |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for r in sorted(rows, key=lambda r: list(ALGORITHMS).index(r["algorithm"])):
            published = PUBLISHED.get(r["algorithm"], {}).get(setting, "")
            pooled = (f"{100 * r['pooled_accuracy']:.2f} ± {100 * r['pooled_ci95']:.2f}"
                      if "pooled_accuracy" in r else "-")
            out.append(f"| {r['algorithm']} | {100 * r['test_accuracy']:.2f} ± "
                       f"{100 * r['test_ci95']:.2f} | {pooled} | {published} | "
                       f"{r['selected_round']} / {r['rounds']}{of_schedule(r)} | "
                       f"{r['train_seconds'] / 3600:.2f} h | {r['device']} | "
                       f"{' '.join(r.get('recipe', [])) or '-'} |")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="folder with omniglot.npz, femnist.npz")
    parser.add_argument("--runs", type=Path, default=Path("runs/converged"))
    parser.add_argument("--every", type=int, default=100, help="rounds between validations")
    parser.add_argument("--patience", type=int, default=5, help="validations without gain")
    parser.add_argument("--max-hours", type=float, default=6.0,
                        help="a cap on each run's training, per process (a resumed run's anew)")
    parser.add_argument("--episodes", type=int, default=600, help="meta-test episodes")
    parser.add_argument("--fit-seconds", type=float, help="a new run's server.rounds sized to "
                        "about this many seconds of training here (a first rounds' timing), so "
                        "that its schedule ends in time; evaluations come on top")
    parser.add_argument("--threads", type=int, default=2, help="torch threads per run")
    parser.add_argument("--jobs", type=int, default=1, help="runs in parallel")
    parser.add_argument("--algorithms", nargs="+", default=list(ALGORITHMS), choices=ALGORITHMS)
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=SETTINGS)
    add_result_options(parser)
    args = parser.parse_args()
    if printed_table(args, table):
        return
    if not args.data:
        parser.error("--data is needed to run")
    jobs = [Job(a, s, args.data, args.runs, args.every, args.patience, args.max_hours,
                args.episodes, args.threads, args.set, args.fit_seconds)
            for s in args.settings for a in args.algorithms]
    print(table(run_jobs(run_one, jobs, args.jobs, args.out)))


if __name__ == "__main__":
    main()
