"""The `fedmeta` command line: a thin layer over the library.

Problems with the user's input (config, data, files) are printed as one line and exit with
status 2; nothing is left half-written in a run directory.
"""

import argparse
import json
import math
import sys
from dataclasses import replace
from pathlib import Path

from rich.console import Console

from fedmeta.adaptation import Candidates, choose_adaptation
from fedmeta.bench.measure import run_benchmarks
from fedmeta.bench.workloads import WORKLOADS
from fedmeta.build import (OWN_SPLITS, TEXT, build_datasets, build_experiment, build_new_clients,
                           build_vertical, check_poolable)
from fedmeta.config import Config, load_config
from fedmeta.data.client_files import save_client, save_own_splits, save_role
from fedmeta.resume import restore_run, resume
from fedmeta.atomic import write_atomic, write_atomic_bytes
from fedmeta.engine.client_state import CLIENTS
from fedmeta.engine.rundir import RunDirectory, make_directory
from fedmeta.engine.simulation import Simulation
from fedmeta.engine.training import train_and_summarize
from fedmeta.ratings import rating_line
from fedmeta.errors import UserError
from fedmeta.privacy.encryption import CkksKeys
from fedmeta.privacy.accountant import epsilon, noise_multiplier_for
from fedmeta.evaluation import binarized, load_episodes, mean_ci95, one_bit_images
from fedmeta.report import write_report

console = Console(stderr=True)


def demo_config_path() -> Path:
    return Path(__file__).parent / "assets" / "demo.toml"


def train(config: Config, out: Path | None, quiet: bool) -> dict:
    """Build, run, evaluate and summarize one experiment in a new run directory, created only
    once the experiment is built and its data checked."""
    if config.federation == "vertical":
        return train_vertical(config, out)
    experiment = build_experiment(config)
    simulation = Simulation(experiment)
    simulation.check_data()
    run = RunDirectory.create(config, out)
    held_out = ("each with its own validation and test split" if experiment.held_out == "splits"
                else f"{experiment.validation.num_clients} meta-validation, "
                     f"{experiment.test.num_clients} meta-test")
    console.print(f"run directory: {run.path}  ({experiment.train.num_clients} training clients"
                  f", {held_out})")
    return train_and_summarize(simulation, run, progress=not quiet)


def train_vertical(config: Config, out: Path | None) -> dict:
    """A vertical run (fedmeta.vertical, build.build_vertical): tabular parties aligned before
    the run directory is created; each repeat's results in `vertical.jsonl`, their summary in
    `summary.json`."""
    vertical_run = build_vertical(config)
    run = RunDirectory.create(config, out)
    console.print(f"run directory: {run.path}  ({config.vertical.data}, vertical)",
                  soft_wrap=True)
    summary, rows = vertical_run()
    write_atomic(run.path / "vertical.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    run.write_summary(summary)
    for setting, result in summary["results"].items():
        accuracy = result["accuracy"]
        auc = (f"ROC AUC {result['auc']['mean']:.4f} ± {result['auc']['ci95']:.4f}, "
               if "auc" in result else "")
        console.print(f"{setting:>12}: {auc}accuracy {100 * accuracy['mean']:.2f}% ± "
                      f"{100 * accuracy['ci95']:.2f}% (95% CI, {summary['repeats']} seeds)",
                      soft_wrap=True)
    unit = "episode" if "bytes_per_episode" in summary else "epoch"  # few-shot or tabular
    traffic = summary[f"bytes_per_{unit}"]
    psi = f"; PSI {summary['psi_bytes']:,} bytes" if "psi_bytes" in summary else ""
    console.print(f"bytes per {unit}: {traffic['up']:,} up (embeddings), {traffic['down']:,} "
                  f"down (gradients){psi}", soft_wrap=True)
    for kind, result in summary.get("attack", {}).items():
        console.print(f"label leakage, {kind}: {result['mean']:.3f} ± {result['ci95']:.3f}")
    return summary


def cmd_run(args: argparse.Namespace) -> None:
    if args.resume is None:
        if args.config is None:
            raise UserError("run needs a CONFIG, or --resume RUN_DIR")
        if args.device is not None:
            raise UserError("--device is for --resume RUN_DIR; a new run takes "
                            "--set run.device=...")
        train(load_config(args.config, args.set), args.out, args.quiet)
    elif args.config is not None or args.set or args.out is not None:
        raise UserError("--resume RUN_DIR goes on with the run's own config.toml and directory: "
                        "no CONFIG, --set or --out")
    else:
        experiment, run, start = resume(args.resume, args.device)
        console.print(f"resuming run directory {run.path} after round {start.round} of "
                      f"{experiment.config.server.rounds}", soft_wrap=True)
        train_and_summarize(Simulation(experiment), run, not args.quiet, start)


def cmd_demo(args: argparse.Namespace) -> None:
    train(load_config(demo_config_path(), args.set), args.out, args.quiet)


def cmd_eval(args: argparse.Namespace) -> None:
    if args.num_episodes is not None and args.num_episodes < 1:
        raise UserError(f"--num-episodes must be at least 1, got {args.num_episodes}")
    for text in args.set:  # the model and its data are the run's: only the evaluation varies
        if not text.startswith("eval."):
            raise UserError(f"eval --set takes eval.* keys (the tasks scored), got {text!r}")
    if args.pooled and args.episodes is not None:
        raise UserError("--pooled draws its episodes from held-out clients; --episodes brings "
                        "its own")
    grid = [Candidates.parse(text) for text in args.choose]
    run = RunDirectory.open(args.run_dir, "eval")
    if args.pooled:
        check_poolable(load_config(run.config_path), "--pooled")
    experiment, params, state, round_index, selected = restore_run(
        run, args.checkpoint or run.latest_checkpoint(), args.device,
        [*args.set, *(["eval.pooled=true"] if args.pooled else [])])
    states = state.get(CLIENTS)
    if selected is not None:  # the model the run kept, as its summary meta-tested it
        round_index, params, states = selected
    tried = []
    if grid:
        experiment, chosen, tried = choose_adaptation(experiment, params, states, *grid)
    config = experiment.config
    if args.episodes is not None:
        episodes = load_episodes(args.episodes)
        if tuple(episodes.support_x.shape[2:]) != tuple(experiment.train.input_shape):
            raise UserError(f"{args.episodes}: inputs of shape {tuple(episodes.support_x.shape[2:])}"
                            f", the model takes {tuple(experiment.train.input_shape)}")
        one_bit = one_bit_images(experiment.train)
        if one_bit:  # preprocessed as the run's training data was
            episodes = binarized(episodes)
        accuracy, ci95 = mean_ci95(experiment.learner.accuracy(params, episodes))
        result = {"accuracy": accuracy, "ci95": ci95, "episodes": episodes.num_episodes,
                  "source": str(args.episodes),
                  "preprocessing": "binarized at 0.5, as the 1-bit training images" if one_bit
                  else "none"}
    else:
        source = "held-out clients"
        if args.clients is not None:
            experiment = replace(experiment, test=build_new_clients(config, args.clients,
                                                                    experiment.train))
            source = f"clients of {args.clients}"
        result = Simulation(experiment).evaluate(params, args.num_episodes
                                                 or config.eval.final_episodes, states=states)
        result = {k.removeprefix("test_"): v for k, v in result.items()}
        result["source"] = source
    result["round"] = round_index
    if args.set:
        result["overrides"] = args.set
    if tried:
        chosen = " ".join(chosen)
        result["chosen"], result["validation"] = chosen, tried
    if args.json:
        print(json.dumps(result))
        return
    if tried:
        print(f"{chosen} chosen on the meta-validation clients, of "
              + ", ".join(f"{setting_text(trial['setting'])} ({validation_score(trial)})"
                          for trial in tried))
    if "mae" in result:
        print(f"{rating_line(result)} from {result['source']}, round {round_index}")
    else:
        where = result["source"]
        if "eligible_clients" in result:
            where = f"{result['eligible_clients']} of {result['held_out_clients']} {where}"
        pooled = (f"; {100 * result['pooled_accuracy']:.2f}% ± {100 * result['pooled_ci95']:.2f}%"
                  " with the clients pooled into one" if "pooled_accuracy" in result else "")
        print(f"accuracy {100 * result['accuracy']:.2f}% ± {100 * result['ci95']:.2f}% (95% CI, "
              f"{result['episodes']} episodes from {where}, round {round_index}){pooled}")


def setting_text(setting: dict) -> str:
    """A candidate's values: the one value, or each key=value of a grid's combination."""
    if len(setting) == 1:
        return str(*setting.values())
    return " ".join(f"{key.removeprefix('learner.')}={value}" for key, value in setting.items())


def validation_score(metrics: dict) -> str:
    """A candidate's meta-validation score, as `fedmeta eval --choose` prints it."""
    if "val_mae" in metrics:
        return f"MAE {metrics['val_mae']:.4f}"
    return f"{100 * metrics['val_accuracy']:.2f}%"


def cmd_report(args: argparse.Namespace) -> None:
    page = write_report(args.run_dirs, args.out)
    print(f"wrote {page} and its plots")


def cmd_bench(args: argparse.Namespace) -> None:
    if args.rounds < 1:
        raise UserError(f"--rounds must be at least 1, got {args.rounds}")
    names = [args.name] if args.name else [*WORKLOADS, "scale"]
    for result in run_benchmarks(names, args.rounds, flower=not args.no_flower):
        print(json.dumps(result) if args.json else bench_report(result), flush=True)


def bench_report(result: dict) -> str:
    """A benchmark result as a few readable lines."""
    if result["workload"] == "scale":
        rows = [f"  {row['clients']:>7,} clients: {1000 * row['seconds_per_round']:7.1f} ms/round"
                for row in result["rows"]]
        return "\n".join([f"scale (cohort {result['cohort']}):", *rows,
                          f"  slowest/fastest round: {result['slowest_over_fastest']:.2f}x, "
                          f"peak RSS {result['peak_rss_mb']:.0f} MB"])
    seconds = "  ".join(f"{key} {1000 * value:.1f} ms"
                        for key, value in result["seconds_per_round"].items())
    ratios = "  ".join(f"{key} {value:.2f}x" for key, value in result["ratios"].items())
    return (f"{result['workload']} ({result['description']}; {result['device']}, execution "
            f"{result['execution']})\n"
            f"  {result['rounds_per_s']:.2f} rounds/s, {result['client_updates_per_s']:.1f} "
            f"client updates/s, {result['tasks_per_s']:.1f} tasks/s\n"
            f"  per round: {seconds}\n  ratios: {ratios}")


def cmd_privacy(args: argparse.Namespace) -> None:
    checks = [("--sample-rate", args.sample_rate, 0 < args.sample_rate <= 1, "in (0, 1]"),
              ("--rounds", args.rounds, args.rounds >= 1, "at least 1"),
              ("--delta", args.delta, 0 < args.delta < 1, "in (0, 1)")]
    if args.target_epsilon is None:
        checks.append(("--noise-multiplier", args.noise_multiplier,
                       0 <= args.noise_multiplier < math.inf, "finite and non-negative"))
    else:
        checks.append(("--target-epsilon", args.target_epsilon,
                       0 < args.target_epsilon < math.inf, "finite and positive"))
    for flag, value, ok, expected in checks:
        if not ok:
            raise UserError(f"{flag} must be {expected}, got {value}")
    sigma = args.noise_multiplier
    if args.target_epsilon is not None:
        sigma = noise_multiplier_for(args.target_epsilon, args.sample_rate, args.rounds,
                                     args.delta, args.accountant)
    spent = epsilon(sigma, args.sample_rate, args.rounds, args.delta, args.accountant)
    result = {"epsilon": spent, "delta": args.delta, "noise_multiplier": sigma,
              "sample_rate": args.sample_rate, "rounds": args.rounds,
              "accountant": args.accountant}
    print(json.dumps(result) if args.json else
          f"epsilon {spent:.4g} at delta {args.delta:g} after {args.rounds} rounds: noise "
          f"multiplier {sigma:.4g}, sample rate {args.sample_rate:g} ({args.accountant.upper()})")


def cmd_export_clients(args: argparse.Namespace) -> None:
    """One file per client, for the machines of a deployment (`fedmeta.data.client_files`)."""
    config = load_config(args.config, args.set)
    own_splits = config.data.dataset in OWN_SPLITS
    if own_splits and (args.validation or args.held_out):
        raise UserError(f"{config.data.dataset}'s held-out data are each client's own splits, "
                        "which its file holds: no --validation or --held-out clients")
    train, validation, test = build_datasets(config)
    if args.clients is not None and not 1 <= args.clients <= train.num_clients:
        raise UserError(f"--clients must be in [1, {train.num_clients}], got {args.clients}")
    for flag, value, clients in (("--validation", args.validation, validation),
                                 ("--held-out", args.held_out, test)):
        if value is not None and not 0 <= value <= clients.num_clients:
            raise UserError(f"{flag} must be in [0, {clients.num_clients}], got {value}")
    make_directory(args.out)
    counts = {"client": (args.clients or train.num_clients, train),
              "validation": (args.validation or 0, validation),
              "heldout": (args.held_out or 0, test)}
    client_id = 0
    for prefix, (count, clients) in counts.items():
        for i in range(count):
            path = args.out / f"{prefix}_{i:05d}.npz"
            if own_splits:
                save_own_splits(path, (train.client(i), validation.client(i), test.client(i)),
                                client_id)
            elif config.data.dataset in TEXT:
                save_role(path, clients, i, client_id)
            else:
                save_client(path, clients.client(i), client_id, clients.num_items)
            client_id += 1
    parts = " (each with its own validation and test splits)" if own_splits else ""
    print(f"wrote {counts['client'][0]} training, {counts['validation'][0]} meta-validation and "
          f"{counts['heldout'][0]} held-out client files to {args.out}{parts}")


def cmd_ckks_keys(args: argparse.Namespace) -> None:
    """A CKKS key pair: `secret.ckks` for every client, `public.ckks` for anyone else."""
    config = load_config(args.config, args.set)
    agg = config.aggregation
    keys = CkksKeys.generate(agg.ckks_poly_modulus_degree, agg.ckks_scale_bits)
    make_directory(args.out)
    write_atomic_bytes(args.out / "secret.ckks", keys.secret)
    write_atomic_bytes(args.out / "public.ckks", keys.public)
    print(f"wrote {args.out / 'secret.ckks'} (give it to every client: node config ckks-key) "
          f"and {args.out / 'public.ckks'}")


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="fedmeta", description=__doc__.splitlines()[0])
    commands = root.add_subparsers(dest="command", required=True)

    def add(name: str, handler, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text)
        sub.set_defaults(handler=handler)
        return sub

    def run_options(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                         help="override a config value, e.g. --set server.rounds=50")
        sub.add_argument("--out", type=Path, help="run directory (default: runs/NAME-TIME)")
        sub.add_argument("--quiet", action="store_true", help="no progress bar")

    run = add("run", cmd_run, "train a federated (meta-)learning run from a TOML config")
    run.add_argument("config", type=Path, nargs="?")
    run_options(run)
    run.add_argument("--resume", type=Path, metavar="RUN_DIR",
                     help="go on with a stopped run from its latest checkpoint")
    run.add_argument("--device", help="with --resume: go on on this device (cpu, cuda, "
                     "cuda:N, auto) instead of the config's run.device")
    run_options(add("demo", cmd_demo, "federated ProtoNets on the bundled Omniglot, offline"))
    evaluate = add("eval", cmd_eval, "evaluate a run's checkpoint on new clients or episodes")
    evaluate.add_argument("run_dir", type=Path)
    new = evaluate.add_mutually_exclusive_group()
    new.add_argument("--episodes", type=Path, help="npz of episodes (see README)")
    new.add_argument("--clients", type=Path, metavar="FILE.npz", help="meta-test on every "
                     "client of this file, in the run's dataset format (omniglot, femnist, "
                     "shakespeare, movielens)")
    evaluate.add_argument("--checkpoint", type=Path, help="default: the run's latest")
    evaluate.add_argument("--num-episodes", type=int, help="held-out episodes to draw")
    evaluate.add_argument("--json", action="store_true", help="print one JSON object")
    evaluate.add_argument("--device", help="evaluate on this device (cpu, cuda, cuda:N, auto) "
                          "instead of the run's run.device")
    evaluate.add_argument("--set", action="append", default=[], metavar="eval.KEY=VALUE",
                          help="score other tasks with the same model, e.g. --set eval.ways=20")
    evaluate.add_argument("--choose", action="append", default=[],
                          metavar="learner.KEY=V1,V2,...", help="a new client's adaptation "
                          "setting (e.g. learner.finetune_lr=0.003,0.01,0.03): the value whose "
                          "meta-validation score is best is the one meta-tested; given for "
                          "several settings, every combination of their values is tried")
    evaluate.add_argument("--pooled", action="store_true", help="also draw episodes from all "
                          "the clients pooled into one, as centralized few-shot benchmarks do "
                          "(Omniglot's published numbers): --set eval.pooled=true")
    report = add("report", cmd_report, "plots and a self-contained HTML page comparing runs")
    report.add_argument("run_dirs", type=Path, nargs="+", metavar="RUN_DIR")
    report.add_argument("--out", type=Path, help="report directory (default: RUN_DIR/report of "
                        "the first run)")
    bench = add("bench", cmd_bench, "simulation speed against a compute ceiling, a naive loop "
                "and Flower's simulation")
    bench.add_argument("name", nargs="?", choices=[*WORKLOADS, "scale"],
                       help="one workload (default: all)")
    bench.add_argument("--rounds", type=int, default=3, help="timed rounds (after a warm-up)")
    bench.add_argument("--no-flower", action="store_true", help="skip Flower's simulation")
    bench.add_argument("--json", action="store_true", help="one JSON object per workload")
    privacy = add("privacy", cmd_privacy, "epsilon of T rounds of the subsampled Gaussian "
                  "mechanism, or the noise multiplier for a target epsilon")
    given = privacy.add_mutually_exclusive_group(required=True)
    given.add_argument("--noise-multiplier", type=float, help="noise std / clip norm")
    given.add_argument("--target-epsilon", type=float, help="solve for the noise multiplier")
    privacy.add_argument("--sample-rate", type=float, required=True,
                         help="probability a client (or record) joins a round")
    privacy.add_argument("--rounds", type=int, required=True)
    privacy.add_argument("--delta", type=float, default=1e-5)
    privacy.add_argument("--accountant", choices=["rdp", "pld"], default="rdp")
    privacy.add_argument("--json", action="store_true", help="print one JSON object")
    export = add("export-clients", cmd_export_clients, "write each client's data to a file "
                 "of its own, for a deployment's machines")
    export.add_argument("config", type=Path)
    export.add_argument("out", type=Path, help="directory for client_NNNNN.npz files")
    export.add_argument("--clients", type=int, help="the first N training clients (default all)")
    export.add_argument("--validation", type=int,
                        help="also the first N meta-validation clients "
                             "(node config validation=true)")
    export.add_argument("--held-out", type=int,
                        help="also the first N meta-test clients (node config held-out=true)")
    export.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    keys = add("ckks-keys", cmd_ckks_keys, "generate the CKKS key pair of encrypted aggregation")
    keys.add_argument("out", type=Path, help="directory for secret.ckks and public.ckks")
    keys.add_argument("--config", type=Path, help="a config whose aggregation.ckks_* to use")
    keys.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        args.handler(args)
    except UserError as error:  # anything else is a bug, and shows its traceback
        print(f"fedmeta: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fedmeta: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
