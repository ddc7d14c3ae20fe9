"""Vertical federated learning (issue 18): what the other parties' columns add, what crosses
the cut, and what the crossing gives away.

1. Breast cancer by 3 departments (configs/vertical_breast_cancer.toml, PSI-aligned): the
   split network against the label party alone and all columns centralized, ROC AUC and
   accuracy over seeds; bytes per epoch; Li et al. 2022's label-leakage attack AUCs on the
   gradients department 1 receives; the same with Gaussian noise on the gradients sent down or
   the embeddings sent up, and its per-row epsilon.
2. The same on an imbalanced version (malignant patients thinned to ~10% of the aligned rows,
   where the norm attack is meant to work).
3. Vertical ProtoNets on Omniglot halves (configs/vertical_omniglot_strips.toml: 5-way
   1-shot, unseen characters): both halves across the cut against the label party's half
   alone and the whole image, on the same meta-test episodes, over seeds.

    OMP_NUM_THREADS=1 python benchmarks/vertical.py --out benchmarks/results/vertical.jsonl
"""

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from fedmeta.atomic import write_atomic
from fedmeta.build import build_vertical
from fedmeta.config import load_config
from fedmeta.vertical.tabular import Aligned, aligned_parties, run_tabular

CONFIG = Path(__file__).parents[1] / "configs" / "vertical_breast_cancer.toml"
FEW_SHOT_CONFIG = Path(__file__).parents[1] / "configs" / "vertical_omniglot_strips.toml"
PROTECTIONS = {
    "none": [],
    "gradient gaussian C=0.5 m=0.25": ["vertical.gradient_noise='gaussian'",
                                       "vertical.gradient_clip=0.5",
                                       "vertical.gradient_noise_multiplier=0.25"],
    "gradient gaussian C=0.5 m=4": ["vertical.gradient_noise='gaussian'",
                                    "vertical.gradient_clip=0.5",
                                    "vertical.gradient_noise_multiplier=4.0"],
    "gradient gaussian C=0.5 m=16": ["vertical.gradient_noise='gaussian'",
                                     "vertical.gradient_clip=0.5",
                                     "vertical.gradient_noise_multiplier=16.0"],
    "embedding gaussian C=1 m=4": ["vertical.embedding_noise='gaussian'",
                                   "vertical.embedding_clip=1.0",
                                   "vertical.embedding_noise_multiplier=4.0"],
    "embedding gaussian C=1 m=16": ["vertical.embedding_noise='gaussian'",
                                    "vertical.embedding_clip=1.0",
                                    "vertical.embedding_noise_multiplier=16.0"],
}


def thinned(data: Aligned, fraction: float, seed: int) -> Aligned:
    """The aligned rows with positives (label 1) kept at about `fraction` of all rows."""
    rng = np.random.default_rng(seed)
    positive = np.flatnonzero(data.y == 1)
    negatives = int((data.y == 0).sum())
    keep = rng.permutation(positive)[:round(fraction * negatives / (1 - fraction))]
    rows = np.sort(np.concatenate([np.flatnonzero(data.y == 0), keep]))
    return replace(data, xs=[x[rows] for x in data.xs], y=data.y[rows])


def tabular(task: str, protection: str, repeats: int, imbalance: float | None) -> dict:
    config = load_config(CONFIG, [f"vertical.repeats={repeats}", *PROTECTIONS[protection]])
    data = aligned_parties(config)
    if imbalance is not None:
        data = thinned(data, imbalance, config.seed)
    start = time.perf_counter()
    summary, _ = run_tabular(config, data)
    return {"task": task, "protection": protection, "positives": float(data.y.mean()),
            "rows": len(data.y), "seconds": time.perf_counter() - start, **summary}


def omniglot(seeds: int, steps: int, episodes: int) -> tuple[dict, list[dict]]:
    config = load_config(FEW_SHOT_CONFIG, [f"vertical.repeats={seeds}", f"vertical.steps={steps}",
                                           f"vertical.test_episodes={episodes}"])
    return build_vertical(config)()


def pm(stat: dict, scale: float = 1.0, digits: int = 3) -> str:
    return f"{scale * stat['mean']:.{digits}f} ± {scale * stat['ci95']:.{digits}f}"


def tabular_table(rows: list[dict]) -> str:
    lines = ["| task | protection | vertical AUC | label party AUC | centralized AUC | "
             "vertical acc. % | label party acc. % | centralized acc. % | norm attack AUC | "
             "cosine attack AUC | epsilon/row (grad, emb) | bytes/epoch up+down |",
             "|" + " --- |" * 12]
    for r in rows:
        res, privacy = r["results"], r["privacy"]
        eps = "/".join("inf" if privacy[side]["epsilon_per_row"] is None
                       else f"{privacy[side]['epsilon_per_row']:.3g}"
                       for side in ("gradient", "embedding"))
        lines.append(
            f"| {r['task']} | {r['protection']} | {pm(res['vertical']['auc'])} | "
            f"{pm(res['label_party']['auc'])} | {pm(res['centralized']['auc'])} | "
            f"{pm(res['vertical']['accuracy'], 100, 1)} | "
            f"{pm(res['label_party']['accuracy'], 100, 1)} | "
            f"{pm(res['centralized']['accuracy'], 100, 1)} | {pm(r['attack']['norm_auc'])} | "
            f"{pm(r['attack']['cosine_auc'])} | {eps} | "
            f"{r['bytes_per_epoch']['up']:,}+{r['bytes_per_epoch']['down']:,} |")
    return "\n".join(lines)


def omniglot_table(summary: dict) -> str:
    traffic = summary["bytes_per_episode"]
    lines = ["| setting | meta-test accuracy %, mean over seeds ± 95% CI (seeds) | "
             "bytes/episode up+down |", "| --- | --- | --- |"]
    for setting, result in summary["results"].items():
        crossing = f"{traffic['up']:,}+{traffic['down']:,}" if setting == "vertical" else "0"
        lines.append(f"| {setting} | {pm(result['accuracy'], 100, 2)} ({summary['repeats']}) | "
                     f"{crossing} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/vertical.jsonl"))
    parser.add_argument("--repeats", type=int, default=10, help="seeds per tabular setting")
    parser.add_argument("--omniglot-seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=2000, help="meta-training episodes")
    parser.add_argument("--episodes", type=int, default=300, help="meta-test episodes")
    args = parser.parse_args()
    torch.set_num_threads(1)
    tabular_rows = [tabular("breast-cancer", p, args.repeats, None) for p in PROTECTIONS]
    tabular_rows += [tabular("breast-cancer, 10% positive", p, args.repeats, 0.1)
                     for p in ("none", "gradient gaussian C=0.5 m=0.25",
                               "gradient gaussian C=0.5 m=4")]
    few_shot, few_shot_rows = omniglot(args.omniglot_seeds, args.steps, args.episodes)
    few_shot_rows = [{"task": "omniglot-strips", **r} for r in few_shot_rows]
    write_atomic(args.out, "".join(json.dumps(r) + "\n" for r in
                                   [*tabular_rows, *few_shot_rows,
                                    {"task": "omniglot-strips", **few_shot}]))
    first = tabular_rows[0]
    print(f"breast cancer: {first['rows']} aligned rows of {[p['rows'] for p in first['parties']]}"
          f" per department, PSI {first['psi_bytes']:,} bytes; "
          f"{first['train_rows']} training rows, {first['test_rows']} held out; "
          f"{args.repeats} seeds\n")
    print(tabular_table(tabular_rows) + "\n")
    print(f"Omniglot halves, 5-way 1-shot, {args.steps} meta-training episodes, "
          f"{args.episodes} meta-test episodes of unseen characters a seed\n")
    print(omniglot_table(few_shot))


if __name__ == "__main__":
    main()
