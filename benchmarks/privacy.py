"""Accuracy under user-level DP (issue 5): Omniglot 5-way 1-shot and FEMNIST new writers at
epsilon in {1, 2, 4, 8, inf} (delta 1e-5), federated ProtoNets with DP-FedAvg.

For each target epsilon the noise multiplier is calibrated (RDP) so that `--rounds` rounds
with Poisson sampling of `--cohort` expected clients spend exactly that epsilon; inf is the
same run with clipping and no noise. Each run appends a JSON line to `--out`.

    python benchmarks/privacy.py --data ../shared/data --rounds 60 --out results.jsonl
    python benchmarks/privacy.py --plot results.jsonl privacy.png   # accuracy vs epsilon
"""

import argparse
import json
import time
from pathlib import Path

import torch

from fedmeta.build import build_experiment
from fedmeta.engine.experiment import client_sample_rate
from fedmeta.config import load_config
from fedmeta.engine.simulation import Simulation
from fedmeta.privacy.accountant import noise_multiplier_for

SETTINGS = {
    # Omniglot: 600 clients of random character groups (30 alphabets are too few for user-level DP)
    "omniglot-5w1s": ["data.dataset='omniglot'", "data.partition='random'",
                      "data.num_clients=600", "data.rotations=true"],
    "femnist-5w1s": ["data.dataset='femnist'"],
}
COMMON = ["model.hidden=32", "task.ways=5", "task.shots=1", "task.queries=5",
          "eval.ways=5", "eval.shots=1", "eval.queries=15", "eval.every=0",
          "learner.algorithm='protonet'", "learner.local_steps=2", "learner.lr=0.002",
          "server.sampling='poisson'", "server.optimizer='sgd'", "server.lr=1.0",
          "privacy.clip_norm=0.5", "privacy.delta=1e-5"]


def run(setting: str, target: float, args: argparse.Namespace) -> dict:
    overrides = COMMON + SETTINGS[setting] + [
        f"data.path='{args.data}/{setting.split('-')[0]}.npz'", f"server.rounds={args.rounds}",
        f"server.clients_per_round={args.cohort}", f"eval.final_episodes={args.episodes}"]
    config = load_config(None, overrides)
    sigma = 0.0
    if target != float("inf"):
        experiment = build_experiment(config)
        q = client_sample_rate(config, experiment.train.num_clients)
        sigma = noise_multiplier_for(target, q, args.rounds, 1e-5)
        config = load_config(None, overrides + [f"privacy.noise_multiplier={sigma}"])
    experiment = build_experiment(config)
    simulation, start = Simulation(experiment), time.perf_counter()
    params = simulation.run()
    result = simulation.evaluate(params, args.episodes)
    spent = experiment.privacy.epsilon_after(args.rounds) if experiment.privacy else float("inf")
    return {"setting": setting, "target_epsilon": target, "epsilon": spent,
            "noise_multiplier": sigma, "rounds": args.rounds, "cohort": args.cohort,
            "train_clients": experiment.train.num_clients,
            "seconds": time.perf_counter() - start, **result}


def plot(results: Path, image: Path) -> None:
    """Meta-test accuracy (95% CI) against epsilon, one line per setting; inf at the right."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in results.read_text().splitlines()]
    finite = sorted({r["target_epsilon"] for r in rows if r["target_epsilon"] != float("inf")})
    at = {eps: i for i, eps in enumerate(finite + [float("inf")])}
    fig, ax = plt.subplots(figsize=(6, 4))
    for setting in dict.fromkeys(r["setting"] for r in rows):
        mine = sorted((r for r in rows if r["setting"] == setting),
                      key=lambda r: at[r["target_epsilon"]])
        ax.errorbar([at[r["target_epsilon"]] for r in mine],
                    [100 * r["test_accuracy"] for r in mine],
                    yerr=[100 * r["test_ci95"] for r in mine], marker="o", capsize=3,
                    label=setting)
    ax.set_xticks(range(len(at)), [f"{e:g}" for e in at])
    ax.set_xlabel("epsilon (delta 1e-5; inf = clipping, no noise)")
    ax.set_ylabel("meta-test accuracy, 5-way 1-shot (%)")
    ax.set_title("Federated ProtoNets under user-level DP")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(image, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plot", nargs=2, type=Path, metavar=("RESULTS", "IMAGE"),
                        help="only draw RESULTS (jsonl) as IMAGE (png)")
    parser.add_argument("--data", help="folder with omniglot.npz, femnist.npz")
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=SETTINGS)
    parser.add_argument("--epsilons", nargs="+", type=float, default=[1, 2, 4, 8, float("inf")])
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--cohort", type=int, default=30)
    parser.add_argument("--episodes", type=int, default=600)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.plot:
        return plot(*args.plot)
    if not (args.data and args.out):
        parser.error("--data and --out are needed to run")
    torch.set_num_threads(2)
    for setting in args.settings:
        for target in args.epsilons:
            row = run(setting, target, args)
            print(f"{setting} eps {row['epsilon']:.2f} (sigma {row['noise_multiplier']:.3f}): "
                  f"{100 * row['test_accuracy']:.2f} ± {100 * row['test_ci95']:.2f}  "
                  f"({row['seconds']:.0f} s)", flush=True)
            with args.out.open("a") as out:
                out.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
