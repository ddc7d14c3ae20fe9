"""Meta-test accuracy of every algorithm under the same compute budget (issue 3).

Each (algorithm, setting) run meta-trains for `--budget` seconds of wall-clock time on
`--threads` torch CPU threads (the rounds that fit), then is scored on `--episodes` episodes of
clients it never trained on: Omniglot's 20 evaluation alphabets, or FEMNIST's held-out
writers (also personalized on their own LEAF train/test split). Runs go `--jobs` at a time in
separate processes. FedAvg and FedAvg+FT are the baselines, next to the published centralized
numbers. Hyperparameters are the MAML paper's where they apply, untuned.

    python benchmarks/accuracy.py --data ../shared/data --budget 90 --jobs 7 --out results.jsonl
"""

import argparse
import os
import time

import torch

from fedmeta.build import build_experiment
from fedmeta.config import load_config
from fedmeta.engine.callbacks import TimeBudget
from fedmeta.engine.simulation import Simulation
from parallel import run_jobs  # beside this script

OMNIGLOT = ["data.dataset='omniglot'", "data.rotations=true"]  # rotations as new classes, as published
SETTINGS = {
    "omniglot-5w1s": [*OMNIGLOT, "task.ways=5", "task.shots=1", "task.queries=5",
                      "eval.ways=5", "eval.shots=1", "eval.queries=15"],
    "omniglot-5w5s": [*OMNIGLOT, "task.ways=5", "task.shots=5", "task.queries=5",
                      "eval.ways=5", "eval.shots=5", "eval.queries=15"],
    "omniglot-20w1s": [*OMNIGLOT, "task.ways=20", "task.shots=1",
                       "task.queries=5", "eval.ways=20", "eval.shots=1", "eval.queries=5"],
    "femnist-5w1s": ["data.dataset='femnist'", "task.ways=5", "task.shots=1", "task.queries=2",
                     "eval.ways=5", "eval.shots=1", "eval.queries=2",
                     "eval.personalization_episodes=10"],
    # a new writer's all classes (LEAF's split: support from its train part, query from its
    # test part, 62-class head): tasks that 5-way episodes of its characters do not saturate
    "femnist-writer": ["data.dataset='femnist'", "task.labels='global'", "task.shots=16",
                       "task.queries=16", "eval.shots=20", "eval.queries=20"],
}
META = ["learner.optimizer='adam'", "learner.lr=0.001", "learner.local_steps=5",
        "learner.tasks_per_step=4", "learner.inner_lr=0.4", "learner.inner_steps=1",
        "learner.eval_inner_steps=3"]
ALGORITHMS = {
    "fedavg": ["learner.optimizer='adam'", "learner.lr=0.001", "learner.local_steps=5",
               "learner.batch_size=32"],
    "fedavg-ft": ["learner.optimizer='adam'", "learner.lr=0.001", "learner.local_steps=5",
                  "learner.batch_size=32", "learner.finetune_steps=50",
                  "learner.finetune_lr=0.01"],
    "protonet": ["learner.optimizer='adam'", "learner.lr=0.001", "learner.local_steps=5"],
    # the inner rates of MAML, FOMAML, Per-FedAvg (FO), Meta-SGD and ANIL by their sweeps on
    # the meta-validation alphabets (BENCHMARKS.md); Per-FedAvg (HF) keeps the MAML paper's 0.4
    "maml": [*META, "learner.inner_lr=0.2"], "fomaml": [*META, "learner.inner_lr=0.05"],
    "metasgd": [*META, "learner.inner_lr=0.05"], "anil": [*META, "learner.inner_lr=1.0"],
    "perfedavg-fo": [*META, "learner.inner_lr=0.05"], "perfedavg-hf": META,
    "reptile": ["learner.inner_lr=0.05", "learner.inner_steps=5", "learner.tasks_per_step=4",
                "learner.local_steps=1", "learner.eval_inner_steps=10"],
    # pFedHN's paper sizes (embeddings aside); a server SGD step of 1.0 or 0.1 on the
    # hypernetwork left its clients' models nearly alike (a quick check), Adam's did not
    "pfedhn": ["server.optimizer='adam'", "server.lr=0.001",
               "learner.optimizer='adam'", "learner.lr=0.001", "learner.local_steps=5",
               "learner.embedding_dim=32", "learner.hypernet_hidden=100",
               "learner.embedding_steps=10", "learner.embedding_lr=0.1"],
}
PUBLISHED = {  # centralized, Conv-4, Omniglot (Finn et al. 2017; Li et al. 2017; Snell et al. 2017)
    "maml": {"omniglot-5w1s": 98.7, "omniglot-5w5s": 99.9, "omniglot-20w1s": 95.8},
    "metasgd": {"omniglot-5w1s": 99.53, "omniglot-5w5s": 99.93, "omniglot-20w1s": 95.93},
    "protonet": {"omniglot-5w1s": 98.8, "omniglot-5w5s": 99.7, "omniglot-20w1s": 96.0},
}
COMMON = ["server.rounds=1000000", "server.clients_per_round=5", "server.optimizer='sgd'",
          "server.lr=1.0", "eval.every=0", "model.name='conv4'"]


def run_one(job: tuple[str, str, str, float, int, int]) -> dict:
    algorithm, setting, data_dir, budget, episodes, threads = job
    torch.set_num_threads(threads)
    dataset = "omniglot" if setting.startswith("omniglot") else "femnist"
    overrides = COMMON + SETTINGS[setting] + ALGORITHMS[algorithm] + [
        f"learner.algorithm='{algorithm}'", f"eval.final_episodes={episodes}",
        f"data.path='{os.path.join(data_dir, dataset + '.npz')}'"]
    simulation = Simulation(build_experiment(load_config(None, overrides)))
    rounds = []
    start = time.perf_counter()
    params = simulation.run([lambda r, *_: rounds.append(r), TimeBudget(budget)])
    train_seconds = time.perf_counter() - start
    metrics = simulation.evaluate(params, episodes)
    if algorithm == "pfedhn":  # what learning a new client's embedding adds to the mean one
        simulation.experiment.learner.embedding_steps = 0
        metrics["mean_embedding_accuracy"] = simulation.evaluate(params, episodes)["test_accuracy"]
    return {"algorithm": algorithm, "setting": setting, "rounds": rounds[-1],
            "train_seconds": round(train_seconds, 1), **metrics}


def table(results: list[dict]) -> str:
    settings = [s for s in SETTINGS if any(r["setting"] == s for r in results)]
    cell = {(r["algorithm"], r["setting"]): r for r in results}
    lines = ["| algorithm | " + " | ".join(settings) + " |",
             "| --- |" + " --- |" * len(settings)]
    for algorithm in ALGORITHMS:
        row = []
        for s in settings:
            r = cell.get((algorithm, s))
            if r is None:
                row.append("")
                continue
            text = f"{100 * r['test_accuracy']:.1f} ± {100 * r['test_ci95']:.1f} ({r['rounds']} r)"
            if "mean_embedding_accuracy" in r:
                text += f"; mean emb. {100 * r['mean_embedding_accuracy']:.1f}"
            if "personal_accuracy" in r:
                text += f"; pers. {100 * r['personal_accuracy']:.1f}"
            if algorithm in PUBLISHED and s in PUBLISHED[algorithm]:
                text += f" [pub. {PUBLISHED[algorithm][s]}]"
            row.append(text)
        if any(row):
            lines.append(f"| {algorithm} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="folder with omniglot.npz, femnist.npz")
    parser.add_argument("--budget", type=float, default=90.0, help="training seconds per run")
    parser.add_argument("--episodes", type=int, default=600)
    parser.add_argument("--threads", type=int, default=2, help="torch threads per run")
    parser.add_argument("--jobs", type=int, default=1, help="runs in parallel")
    parser.add_argument("--algorithms", nargs="+", default=list(ALGORITHMS), choices=ALGORITHMS)
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=SETTINGS)
    parser.add_argument("--out", help="append one JSON line per run here")
    args = parser.parse_args()
    jobs = [(a, s, args.data, args.budget, args.episodes, args.threads)
            for s in args.settings for a in args.algorithms]
    results = run_jobs(run_one, jobs, args.jobs, args.out)
    print(f"\nbudget {args.budget:.0f} s of training per run on {args.threads} threads; "
          f"{args.episodes} meta-test episodes; accuracy % ± 95% CI (rounds trained)\n")
    print(table(results))


if __name__ == "__main__":
    main()
