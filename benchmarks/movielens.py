"""Cold-start recommendation on MovieLens ml-latest-small (issue 21): new users adapted on
their first K ratings, scored on every later one (MAE, RMSE, NDCG@10, 95% CIs over users).

The learned rows train the same MeLU-shaped model (`configs/movielens_melu.toml`) for the
same wall-clock budget (`--seconds` each, on whatever CPU runs this), with K = `--shots` for
training episodes and new users; the model kept is the round of best MAE on the
meta-validation users, scored once on the meta-test users. The references need no training:
the training users' global mean, and each movie's mean (damped by 5 pseudo-ratings) plus the
new user's bias on its K support ratings, its mean residual or (damped) its residuals summed
over K plus pseudo-ratings chosen among `USER_DAMPINGS` on the meta-validation users; and
Koren's regularized baseline predictor fitted whole (koren-baseline: the item and training
users' biases fitted jointly, a new user's bias damped as theirs were, both dampings chosen on
the meta-validation users). They are given for K = 5, 10 and 20.

- fedmeta-maml: FedMeta (Chen et al. 2018) with MeLU's split: clients take `local_steps`
  Adam steps on second-order MAML's meta-loss, adapting the MLP and output layer on the
  support; the server averages (SGD, rate 1).
- centralized: the same meta-objective as a data center holding every user would run it
  (MeLU's training): one meta-gradient per user, averaged over a batch of users, one server
  Adam step per batch; the upper reference of what federation costs.
- fedavg / fedavg-ft: FedAvg of the same model on all of a client's ratings; -ft fine-tunes
  all of it on the new user's support.
- fcf: federated collaborative filtering (Ammad-ud-din et al. 2019) of a matrix
  factorization (`configs/movielens_mf.toml`): FedRep's round, the user vector and bias fitted
  and kept on the phone, the item side averaged; a new user fits its user side on its support
  by ridge least squares, the items frozen.
- fedmeta-maml-mf: FedMeta-MAML of the same matrix factorization, the user vector and bias
  meta-learned as a starting point and adapted on the support by gradient steps (its
  `inner_params`), the item side global.
- fomaml, reptile, perfedavg-fo: the first-order relatives, with `--all`.

A new user's adaptation rate (the MAML family's test-time rate, FedAvg+FT's fine-tuning rate)
is chosen among the row's `RATES` on the meta-validation users (`fedmeta.adaptation`) for the
kept model, then the meta-test users are scored once; `--rescore` does it for the runs
already in `--runs` (the latest of each row), training none.

The target (issue 21): fedmeta-maml's MAE at K = 10 at least 5% below fedavg-ft's and below
item mean + user bias, CIs apart; within 3% of centralized. The paired comparisons (the same
meta-test users) are printed as the mean per-user MAE difference with its 95% CI.

    python benchmarks/movielens.py --data ../shared/data/movielens.npz --seconds 60 \\
        --runs runs/movielens --out benchmarks/results/movielens-60s-local.jsonl
"""

import argparse
import json
from itertools import product
from pathlib import Path

import torch

from fedmeta.adaptation import Candidates, choose_adaptation, rate_setting
from fedmeta.build import Datasets, build_datasets, build_experiment
from fedmeta.config import load_config
from fedmeta.data import ColdStartSampler
from fedmeta.engine.rundir import RunDirectory
from fedmeta.engine.simulation import Simulation
from fedmeta.engine.training import train_and_summarize
from fedmeta.evaluation import mean_ci95
from fedmeta.ratings import (baseline_biases, cold_start_test, global_mean, item_mean_user_bias,
                             item_means)
from fedmeta.resume import restored

CONFIG = Path(__file__).parents[1] / "configs" / "movielens_melu.toml"
MF_CONFIG = CONFIG.with_name("movielens_mf.toml")
FEDERATED = ["learner.local_steps=5", "learner.optimizer='adam'", "learner.lr=0.005",
             "server.optimizer='sgd'", "server.lr=1.0"]
ALGORITHMS = {
    "fedmeta-maml": FEDERATED,
    "centralized": ["learner.local_steps=1", "learner.optimizer='sgd'", "learner.lr=1.0",
                    "server.optimizer='adam'", "server.lr=0.005"],
    "fedavg": ["learner.algorithm='fedavg'", *FEDERATED],
    "fedavg-ft": ["learner.algorithm='fedavg-ft'", "learner.finetune_steps=10",
                  "learner.finetune_lr=0.05", *FEDERATED],
}
MF_ROWS = {  # configs/movielens_mf.toml's model
    "fcf": [],
    "fedmeta-maml-mf": ["learner.algorithm='maml'", "learner.inner_params=['user.']",
                        "learner.inner_lr=0.1", "learner.eval_inner_steps=5", *FEDERATED],
}
MORE = {
    "fomaml": ["learner.algorithm='fomaml'", *FEDERATED],
    "reptile": ["learner.algorithm='reptile'", "learner.inner_lr=0.05", "learner.inner_steps=5",
                "server.optimizer='sgd'", "server.lr=1.0"],
    "perfedavg-fo": ["learner.algorithm='perfedavg-fo'", *FEDERATED],
}

MAML_RATES = ("0.01", "0.02", "0.05", "0.1")
RATES = {  # the adaptation rates a row is chosen among on validation, if not MAML_RATES
    "fedavg-ft": ("0.005", "0.01", "0.02", "0.05"),
    "fedmeta-maml-mf": ("0.05", "0.1", "0.2", "0.5"),
}


USER_DAMPINGS = (1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0)  # chosen on validation
ITEM_DAMPINGS = (0.5, 1.0, 2.0, 5.0, 10.0, 25.0)  # Koren's baseline's, chosen with those


def references(datasets: Datasets) -> list[dict]:
    """The non-federated references for K = 5, 10, 20 on the meta-test users; the damped
    user bias's pseudo-ratings chosen for each K on the meta-validation users."""
    rows = []
    train, validation, test = datasets
    val_clients = [validation.client(i) for i in range(validation.num_clients)]
    clients = [test.client(i) for i in range(test.num_clients)]
    item_mean = item_means(train)
    koren = {(item, user): item_mean_user_bias(mean + item_bias, user_damping=user)
             for item, user in product(ITEM_DAMPINGS, USER_DAMPINGS)
             for mean, item_bias, _ in [baseline_biases(train, item, user)]}
    for shots in (5, 10, 20):
        sampler = ColdStartSampler(shots, 1)
        tried = [{"value": damping, "val_mae": cold_start_test(
            item_mean_user_bias(item_mean, user_damping=damping), val_clients, sampler).mae}
            for damping in USER_DAMPINGS]
        damping = min(tried, key=lambda t: t["val_mae"])["value"]
        koren_tried = [{"value": f"item_damping={item} user_damping={user}",
                        "val_mae": cold_start_test(predict, val_clients, sampler).mae}
                       for (item, user), predict in koren.items()]
        koren_predict, koren_best = min(zip(koren.values(), koren_tried),
                                        key=lambda pair: pair[1]["val_mae"])
        for name, predict, chosen in (
                ("global-mean", global_mean(train), {}),
                ("item-mean+user-bias", item_mean_user_bias(item_mean), {}),
                ("item-mean+damped-user-bias", item_mean_user_bias(item_mean, user_damping=damping),
                 {"chosen": f"user_damping={damping}", "validation": tried}),
                ("koren-baseline", koren_predict,
                 {"chosen": koren_best["value"], "validation": koren_tried})):
            result = cold_start_test(predict, clients, sampler)
            rows.append({"method": name, "shots": shots, **result.as_dict(per_client=True),
                         **chosen})
    return rows


def learned(name: str, overrides: list[str], args: argparse.Namespace, datasets: Datasets,
            path: Path = CONFIG) -> dict:
    done = sorted(Path(args.runs).glob(f"{name}-[0-9]*"))
    if args.rescore and done:
        run = RunDirectory.open(done[-1], "movielens.py --rescore")
        experiment = build_experiment(load_config(run.config_path), datasets)
        summary = json.loads(run.summary_path.read_text())
    else:
        config = load_config(path, [f"data.path='{args.data}'", f"seed={args.seed}",
                                    f"task.shots={args.shots}", f"eval.shots={args.shots}",
                                    "server.rounds=100000", "eval.every=25",
                                    f"run.time_budget_seconds={args.seconds}",
                                    f"run.out_dir='{args.runs}'", f"name='{name}'", *overrides])
        experiment = build_experiment(config, datasets)
        run = RunDirectory.create(config)
        summary = train_and_summarize(Simulation(experiment), run, progress=False)
    row = {"method": name, "shots": args.shots, "rounds": summary["rounds"],
           "selected_round": summary["selected"]["round"],
           "train_seconds": summary["train_seconds"], **summary["meta_test"]}
    rate = rate_setting(experiment.config.learner.algorithm)
    if rate is None:
        return row
    *_, (_, params, states) = restored(experiment, run.latest_checkpoint())
    experiment, chosen, tried = choose_adaptation(experiment, params, states, Candidates(
        rate, RATES.get(name, MAML_RATES)))
    test = Simulation(experiment).evaluate(params, 0, per_client=True, states=states)
    return {**row, **{k.removeprefix("test_"): v for k, v in test.items()},
            "chosen": " ".join(chosen),
            "validation": [{"value": t["setting"][rate], "val_mae": t["val_mae"]} for t in tried]}


def paired(rows: dict[str, dict], a: str, b: str) -> str:
    """a's per-user MAE minus b's on the same users: mean, 95% CI, relative to b."""
    diff = torch.tensor(rows[a]["per_client_mae"]) - torch.tensor(rows[b]["per_client_mae"])
    mean, ci = mean_ci95(diff)
    return (f"{a} - {b}: {mean:+.4f} ± {ci:.4f} MAE ({100 * mean / rows[b]['mae']:+.1f}% of "
            f"{b}'s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--shots", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--runs", default="runs/movielens")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--all", action="store_true", help="also the first-order relatives")
    parser.add_argument("--rescore", action="store_true", help="score the latest run of each "
                        "row already in --runs again (adaptation chosen on validation)")
    args = parser.parse_args()
    # the clients of every row: the two configs' data sections are the same
    datasets = build_datasets(load_config(CONFIG, [f"data.path='{args.data}'",
                                                   f"seed={args.seed}"]))
    rows = references(datasets)
    for name, overrides in {**ALGORITHMS, **(MORE if args.all else {})}.items():
        rows.append(learned(name, overrides, args, datasets))
    for name, overrides in MF_ROWS.items():
        rows.append(learned(name, overrides, args, datasets, MF_CONFIG))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("".join(json.dumps(row) + "\n" for row in rows))
    print("| method | K | rounds | adaptation chosen | MAE | RMSE | NDCG@10 | users |\n"
          "|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['method']} | {row['shots']} | {row.get('rounds', '-')} | "
              f"{row.get('chosen', '-')} | "
              f"{row['mae']:.4f} ± {row['mae_ci95']:.4f} | {row['rmse']:.4f} ± "
              f"{row['rmse_ci95']:.4f} | {row['ndcg10']:.4f} ± {row['ndcg10_ci95']:.4f} | "
              f"{row['clients']} |")
    at_k = {row["method"]: row for row in rows if row["shots"] == args.shots}
    for other in ("fedavg-ft", "item-mean+user-bias", "item-mean+damped-user-bias",
                  "koren-baseline", "centralized"):
        print(paired(at_k, "fedmeta-maml", other))
    for reference in ("item-mean+damped-user-bias", "koren-baseline"):
        print(paired(at_k, "fedavg-ft", reference))
    for other in ("item-mean+user-bias", "fedmeta-maml"):
        print(paired(at_k, "fcf", other))


if __name__ == "__main__":
    main()
