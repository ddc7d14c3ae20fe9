"""A vertical run on tabular parties: align them by PSI, hold out aligned rows, train the split
network on the rest, and score it against the label party alone and all columns centralized
(the same rows, split and seed), over `vertical.repeats` seeds; with a binary task, Li et al.
2022's label-leakage attacks on what the label party sent back to party 1 after the first
epoch.
"""

from dataclasses import dataclass

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from fedmeta.config import Config, VerticalConfig
from fedmeta.errors import UserError
from fedmeta.evaluation import mean_ci95
from fedmeta.optim import OPTIMIZERS
from fedmeta.seeding import CUT_NOISE_STREAM, seeded
from fedmeta.vertical.alignment import align
from fedmeta.vertical.leakage import attack_aucs
from fedmeta.vertical.parties import Party, breast_cancer_departments, read_parties
from fedmeta.vertical.protection import Protection
from fedmeta.vertical.split import SplitNetwork, Traffic, predict, train_split

SETTINGS = ("vertical", "label_party", "centralized")
MIN_ROWS = 4  # held-out and training rows both need some of each class, at least


@dataclass(frozen=True)
class Aligned:
    """The parties, and their aligned columns: `xs[p]` [N, d_p], labels `y` [N]."""

    parties: list[Party]
    xs: list[np.ndarray]
    y: np.ndarray
    psi_bytes: int


def load_parties(vertical: VerticalConfig, seed: int) -> list[Party]:
    if vertical.data == "files":
        if len(vertical.party_files) < 2:  # a deployment's parties each read their own
            raise UserError("vertical.data = 'files' runs here with vertical.party_files: at "
                            f"least 2 parties' CSVs, got {len(vertical.party_files)}")
        return read_parties(vertical.party_files)
    return breast_cancer_departments(vertical.parties, vertical.holding, seed)


def aligned_parties(config: Config) -> Aligned:
    """The config's parties, aligned by PSI. UserError (one line) where their ids cannot be
    aligned or too few rows are shared to hold some out."""
    parties = load_parties(config.vertical, config.seed)
    alignment = align([p.ids for p in parties], [p.name for p in parties])
    if alignment.size < MIN_ROWS:
        raise UserError(f"only {alignment.size} ids are held by all parties; a vertical run "
                        f"needs at least {MIN_ROWS} to train on some and score others")
    xs = [p.x[rows] for p, rows in zip(parties, alignment.rows)]
    return Aligned(parties, xs, parties[0].y[alignment.rows[0]], alignment.psi_bytes)


def protections(vertical: VerticalConfig) -> tuple[Protection, Protection]:
    """What protects the embeddings sent up, and the gradients sent down."""
    return (Protection(vertical.embedding_noise, vertical.embedding_clip,
                       vertical.embedding_noise_multiplier),
            Protection(vertical.gradient_noise, vertical.gradient_clip,
                       vertical.gradient_noise_multiplier))


def standardized(train: np.ndarray, test: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """A party's columns scaled by its own training rows' mean and std (done by the party)."""
    mean, std = train.mean(0), train.std(0)
    std[std == 0] = 1.0
    return (torch.from_numpy((train - mean) / std).float(),
            torch.from_numpy((test - mean) / std).float())


def scores(probabilities: torch.Tensor, y: np.ndarray) -> dict[str, float]:
    """ROC AUC (one-vs-rest beyond 2 classes; NaN if the held-out rows hold one class) and
    accuracy."""
    p = probabilities.numpy()
    accuracy = float((p.argmax(1) == y).mean())
    if len(np.unique(y)) < 2:
        return {"auc": float("nan"), "accuracy": accuracy}
    auc = roc_auc_score(y, p[:, 1]) if p.shape[1] == 2 else roc_auc_score(
        y, p, multi_class="ovr", labels=list(range(p.shape[1])))
    return {"auc": float(auc), "accuracy": accuracy}


def held_out_split(n: int, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Aligned rows 0..n-1 split into held-out and training rows, by a seed every party knows
    (so every party splits the same people the same way)."""
    order = torch.randperm(n, generator=seeded(seed, 0)).numpy()
    held_out = max(1, min(n - 1, round(test_fraction * n)))
    return order[:held_out], order[held_out:]


def initial_network(vertical: VerticalConfig, columns: list[int], classes: int, width: int,
                    seed: int) -> SplitNetwork:
    """The split network every party builds from the same seed, each keeping its own part."""
    torch.manual_seed(seed)
    return SplitNetwork.mlp(columns, vertical.hidden, width, vertical.top_hidden, classes)


def one_repeat(config: Config, data: Aligned, repeat: int) -> dict:
    """Every setting on one seed's split of the aligned rows into training and held-out rows."""
    vertical, seed = config.vertical, config.seed + repeat
    n, classes = len(data.y), int(data.y.max()) + 1
    test, train = held_out_split(n, vertical.test_fraction, seed)
    held_out = len(test)
    columns = [standardized(x[train], x[test]) for x in data.xs]
    y_train = torch.from_numpy(data.y[train])
    up, down = protections(vertical)
    inputs = {"vertical": columns, "label_party": columns[:1],
              "centralized": [tuple(torch.cat(side, 1) for side in zip(*columns))]}
    row = {"seed": seed, "train_rows": len(train), "test_rows": held_out}
    for setting in SETTINGS:
        parties = inputs[setting]
        width = vertical.embedding * (len(columns) if setting == "centralized" else 1)
        network = initial_network(vertical, [x.shape[1] for x, _ in parties], classes, width,
                                  seed)
        noise = seeded(seed, CUT_NOISE_STREAM)  # the parties' private randomness, not shared
        state, traffic, losses, records = train_split(
            network, [x for x, _ in parties], y_train, vertical.epochs, vertical.batch_size,
            OPTIMIZERS[vertical.optimizer](vertical.lr), seeded(seed, 1), up, down, noise,
            record=setting == "vertical" and classes == 2)
        inference = Traffic()
        probabilities = predict(network, state, [x for _, x in parties], up, noise,
                                inference)
        row[setting] = {**scores(probabilities, data.y[test]), "final_loss": losses[-1]}
        if setting == "vertical":
            row["bytes_per_epoch"] = {"up": traffic.up // vertical.epochs,
                                      "down": traffic.down // vertical.epochs}
            row["inference_bytes"] = inference.up
            if records:  # after the first epoch: the norm attack needs a learned prior
                row["attack"] = attack_aucs([r for r in records
                                             if r.epoch >= min(1, vertical.epochs - 1)])
    return row


def finite(epsilon: float) -> float | None:
    """Epsilon for JSON: None where there is no guarantee (no noise)."""
    return None if epsilon == float("inf") else epsilon


def privacy_summary(vertical: VerticalConfig) -> dict:
    """What protected the crossings, and each direction's per-row epsilon."""
    up, down = protections(vertical)
    return {
        "embedding": {"noise": up.noise, "clip": up.clip, "multiplier": up.multiplier,
                      "epsilon_per_row": finite(up.epsilon(vertical.epochs, vertical.delta))},
        "gradient": {"noise": down.noise, "clip": down.clip, "multiplier": down.multiplier,
                     "epsilon_per_row": finite(down.epsilon(vertical.epochs, vertical.delta))},
        "delta": vertical.delta,
        "scope": "each training row's own releases (one a epoch), given each step's models; "
                 "not the whole transcript (fedmeta/vertical/protection.py)"}


def summarize(config: Config, data: Aligned, rows: list[dict]) -> dict:
    """Means and 95% CIs over the repeats, with what crossed and what protected it."""
    vertical = config.vertical

    def stats(values: list[float]) -> dict[str, float]:
        mean, ci95 = mean_ci95(torch.tensor(values))
        return {"mean": mean, "ci95": ci95}

    results = {setting: {metric: stats([r[setting][metric] for r in rows])
                         for metric in ("auc", "accuracy")} for setting in SETTINGS}
    summary = {
        "federation": "vertical", "repeats": len(rows),
        "parties": [{"name": p.name, "rows": len(p.ids), "columns": int(p.x.shape[1])}
                    for p in data.parties],
        "aligned_rows": len(data.y), "train_rows": rows[0]["train_rows"],
        "test_rows": rows[0]["test_rows"], "psi_bytes": data.psi_bytes,
        "bytes_per_epoch": rows[0]["bytes_per_epoch"],
        "inference_bytes": rows[0]["inference_bytes"], "results": results,
        "privacy": privacy_summary(vertical)}
    if "attack" in rows[0]:
        summary["attack"] = {kind: stats([r["attack"][kind] for r in rows])
                             for kind in rows[0]["attack"]}
    return summary


def run_tabular(config: Config, data: Aligned) -> tuple[dict, list[dict]]:
    """The summary of a vertical run on aligned parties, and each repeat's row."""
    rows = [one_repeat(config, data, repeat) for repeat in range(config.vertical.repeats)]
    return summarize(config, data, rows), rows
