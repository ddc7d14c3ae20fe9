"""FedMeta against FedAvg on LEAF's Shakespeare (issue 20): next-character accuracy on roles
never trained on, and the rounds and bytes each algorithm needs to reach FedAvg's accuracy.

Every algorithm trains the same rounds, cohort and samples a local step (a task of `--shots`
support and as many query samples, or a FedAvg minibatch of both together) on the character
LSTM. A new role adapts on `--eval-shots` samples of the first part of its text (meta-learners
by their inner steps, FedAvg+FT by as many fine-tuning steps; FedAvg predicts with the global
model) and is scored on as many of the rest. The rounds-to-target read the meta-validation
roles only (every `--every` rounds); the target is FedAvg's last meta-validation accuracy.
The round kept is the best on the meta-validation roles, and so is the adaptation rate among
`--adapt-lrs` (FedAvg+FT's fine-tuning rate, the MAML family's test-time rate;
`fedmeta.adaptation`), so the meta-test roles are read once, at the end (accuracy, 95% CI over
tasks). The meta-learners train with one inner step of `--inner-lr` a task; Reptile's inner
optimizer is `--inner-optimizer` (SGD, or Adam as Nichol et al. train it).

    python benchmarks/shakespeare.py --data ../shared/data --out results.jsonl [--rounds 20]
    python benchmarks/shakespeare.py --table results.jsonl
"""

import time

import torch

from fedmeta.adaptation import Candidates, choose_adaptation, rate_setting
from fedmeta.build import build_experiment
from fedmeta.config import load_config
from fedmeta.engine.simulation import Simulation
from parallel import run_sweep, sweep_parser  # beside this script

# trained with one inner step of --inner-lr (Reptile steps by its inner optimizer on each task:
# as many steps as the others' local steps)
META_LEARNERS = ("maml", "fomaml", "metasgd", "perfedavg-fo", "reptile")
ALGORITHMS = ("fedavg", "fedavg-ft", *META_LEARNERS)
ANCHORS = [  # published next-character accuracy on Shakespeare, for scale
    "FedMeta (Chen et al. 2018): +3.2 to +14.8 points over FedAvg across datasets, "
    "2.8-4.3x less communication to FedAvg's accuracy",
    "Flower's FedMeta baseline (read from its plots): FedAvg about 39%, FedMeta-MAML about 49%",
    "LEAF / FLUTE FedAvg: about 57% (715 clients, long training)",
]


def overrides(args, algorithm: str) -> list[str]:
    return [
        "data.dataset='shakespeare'", f"data.path='{args.data}/shakespeare.npz'",
        f"data.min_samples={args.eval_shots}", "model.name='char-lstm'",
        f"model.hidden={args.hidden}", f"task.shots={args.shots}", f"task.queries={args.shots}",
        f"learner.algorithm='{algorithm}'", "learner.optimizer='adam'", "learner.lr=0.003",
        f"learner.inner_lr={args.inner_lr}", f"learner.inner_optimizer='{args.inner_optimizer}'",
        "learner.local_steps=5", f"learner.batch_size={2 * args.shots}",
        f"learner.eval_inner_steps={args.adapt_steps}",
        f"learner.finetune_steps={args.adapt_steps}", f"learner.finetune_lr={args.adapt_lrs[0]}",
        f"server.rounds={args.rounds}", f"server.clients_per_round={args.clients}",
        f"eval.every={args.every}", f"eval.episodes={args.val_episodes}",
        f"eval.shots={args.eval_shots}", f"eval.queries={args.eval_shots}",
        *(["learner.inner_steps=1"] if algorithm in META_LEARNERS else [])]


def run_one(job) -> dict:
    args, algorithm = job
    torch.set_num_threads(1)
    experiment = build_experiment(load_config(None, overrides(args, algorithm)))
    curve, sent, kept = [], 0, (0, -1.0, None)

    def record(round_index, params, state, metrics):
        nonlocal sent, kept
        sent += metrics["bytes_down"] + metrics["bytes_up"]
        if "val_accuracy" in metrics:
            curve.append((round_index, metrics["val_accuracy"], sent))
            if metrics["val_accuracy"] > kept[1]:
                kept = (round_index, metrics["val_accuracy"], params)
    start = time.perf_counter()
    Simulation(experiment).run([record])
    seconds = time.perf_counter() - start
    tried, rate = [], rate_setting(algorithm)  # none for FedAvg; Meta-SGD learns its rates
    if rate is not None:
        experiment, _, tried = choose_adaptation(experiment, kept[2], None, Candidates(
            rate, tuple(map(str, args.adapt_lrs))))
    test = Simulation(experiment).evaluate(kept[2], args.episodes)
    return {"algorithm": algorithm, "rounds": args.rounds, "clients": args.clients,
            "inner_lr": args.inner_lr if algorithm in META_LEARNERS else None,
            "inner_optimizer": args.inner_optimizer if algorithm == "reptile" else None,
            "hidden": args.hidden, "shots": args.shots, "eval_shots": args.eval_shots,
            "train_seconds": round(seconds, 1), "curve": curve, "kept_round": kept[0],
            "adapt_lr": (getattr(experiment.config.learner, rate.removeprefix("learner."))
                         if rate is not None else None),
            "validation": tried, "bytes_per_round": sent / args.rounds, **test}


def to_target(result: dict, target: float) -> str:
    """The first evaluated round whose meta-validation accuracy reaches `target`, and the
    bytes sent up and down until then."""
    for round_index, accuracy, sent in result["curve"]:
        if accuracy >= target:
            return f"{round_index} | {sent / 1e6:.1f}"
    return "not reached | -"


def table(results: list[dict]) -> str:
    by = {r["algorithm"]: r for r in results}
    target = by["fedavg"]["curve"][-1][1] if "fedavg" in by else float("nan")
    first = results[0]
    lines = [f"{first['rounds']} rounds of {first['clients']} clients, LSTM {first['hidden']}, "
             f"tasks of {first['shots']}+{first['shots']} samples; new roles adapt on "
             f"{first['eval_shots']}; target = FedAvg's last meta-validation accuracy "
             f"{100 * target:.1f}%", "",
             "| algorithm | meta-test accuracy % (95% CI) | val. accuracy % (last) | kept round "
             "| adaptation rate | rounds to target | MB to target | MB per round | train s |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for algorithm in ALGORITHMS:
        r = by.get(algorithm)
        if r is None:
            continue
        lines.append(f"| {algorithm} | {100 * r['test_accuracy']:.1f} ± "
                     f"{100 * r['test_ci95']:.1f} | {100 * r['curve'][-1][1]:.1f} | "
                     f"{r.get('kept_round', r['rounds'])} | {r.get('adapt_lr') or '-'} | "
                     f"{to_target(r, target)} | {r['bytes_per_round'] / 1e6:.2f} | "
                     f"{r['train_seconds']:.0f} |")
    return "\n".join(lines + ["", "Anchors (not comparable budgets):",
                              *(f"- {anchor}" for anchor in ANCHORS)])


def main() -> None:
    parser = sweep_parser(__doc__)
    parser.add_argument("--clients", type=int, default=4, help="clients a round")
    parser.add_argument("--hidden", type=int, default=64, help="LSTM units (LEAF: 256)")
    parser.add_argument("--shots", type=int, default=16, help="support (= query) samples a task")
    parser.add_argument("--eval-shots", type=int, default=32,
                        help="a new role's support (= query) samples; also data.min_samples")
    parser.add_argument("--adapt-steps", type=int, default=5)
    parser.add_argument("--adapt-lrs", type=float, nargs="+", default=[0.05, 0.1, 0.2, 0.5],
                        help="a new role's adaptation rates (FedAvg+FT's fine-tuning, the MAML "
                        "family's test-time), the best on validation kept")
    parser.add_argument("--inner-lr", type=float, default=0.5,
                        help="the meta-learners' inner rate in training")
    parser.add_argument("--inner-optimizer", choices=("sgd", "adam"), default="sgd",
                        help="Reptile's inner optimizer, in training and for a new role")
    parser.add_argument("--every", type=int, default=5, help="rounds between validations")
    parser.add_argument("--val-episodes", type=int, default=20)
    parser.add_argument("--algorithms", nargs="+", default=list(ALGORITHMS), choices=ALGORITHMS)
    run_sweep(parser, run_one, lambda args: [(args, a) for a in checked(parser, args)], table)


def checked(parser, args) -> list[str]:
    """The algorithms to run, once the round kept and the target can be read: both need a
    meta-validation every `--every` rounds, at least once."""
    if not 1 <= args.every <= args.rounds:
        parser.error(f"--every must be between 1 and --rounds ({args.rounds}): the round kept "
                     "and the target read the meta-validation roles")
    return args.algorithms


if __name__ == "__main__":
    main()
