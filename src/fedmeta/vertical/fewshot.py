"""A vertical few-shot run: images cut into vertical strips, one a party, the first party's
with the labels; vertical ProtoNets (`protonet`) meta-trained on episodes of one pool of
characters and meta-tested on episodes of another, against the label party's strip alone and
the whole image (centralized), on the same episodes, over `vertical.repeats` seeds. The
pools: the bundled Omniglot's background alphabets, and its evaluation alphabets' unseen
characters (`omniglot-strips`); or FEMNIST's training writers, and writers held out (the same
62 classes by new hands, `femnist-strips`).

The parties' examples are the same images by construction, so no PSI runs here (the tabular
runs align theirs). Protection applies to what crosses as in the tabular runs; an example's
releases are as many as the episodes it is drawn in, so the epsilon reported is that of one
release.
"""

from pathlib import Path

import torch

from fedmeta.config import Config
from fedmeta.data import ClientData, EpisodeSampler, FederatedDataset
from fedmeta.data.femnist import femnist_federated
from fedmeta.data.omniglot import load_omniglot_arrays
from fedmeta.evaluation import mean_ci95
from fedmeta.models import MLP
from fedmeta.optim import OPTIMIZERS
from fedmeta.seeding import CUT_NOISE_STREAM, seeded
from fedmeta.vertical.protonet import Slicer, meta_test, meta_train, width_slices
from fedmeta.vertical.split import Traffic
from fedmeta.vertical.tabular import SETTINGS, finite, protections


def omniglot_pools(path: str | Path) -> tuple[ClientData, ClientData]:
    """Every background character's examples, and every evaluation character's."""
    arrays = load_omniglot_arrays(path)
    background = arrays["split"] == "background"

    def pool(mask):
        return ClientData(torch.from_numpy(arrays["images"][mask]),
                          torch.from_numpy(arrays["char_id"][mask]).long())

    return pool(background), pool(~background)


def femnist_pools(path: str | Path | None, seed: int) -> tuple[ClientData, ClientData]:
    """Every training writer's examples, and every held-out writer's (20% of the writers,
    drawn by `seed`)."""
    return tuple(pooled(side) for side in femnist_federated(path, seed=seed))


def pooled(clients: FederatedDataset) -> ClientData:
    parts = [clients.client(i) for i in range(clients.num_clients)]
    return ClientData(torch.cat([p.x for p in parts]), torch.cat([p.y for p in parts]))


def setting_slicers(parties: int) -> dict[str, tuple[Slicer, int]]:
    """Each setting's slices of an image and how many parties hold one."""
    strips = width_slices(parties)
    return {"vertical": (strips, parties), "label_party": (lambda x: strips(x)[:1], 1),
            "centralized": (lambda x: [x], 1)}


def one_repeat(config: Config, pools: tuple[ClientData, ClientData], repeat: int) -> dict:
    vertical, seed = config.vertical, config.seed + repeat
    train, test = pools
    episodes = EpisodeSampler(vertical.ways, vertical.shots, vertical.test_queries).sample(
        test, vertical.test_episodes, seeded(seed, 1))
    up, down = protections(vertical)
    row = {"seed": seed}
    for setting, (slicer, parties) in setting_slicers(vertical.parties).items():
        shapes = [tuple(s.shape[1:]) for s in slicer(episodes.support_x[0])]
        width = vertical.embedding * (vertical.parties if setting == "centralized" else 1)
        torch.manual_seed(seed)
        bottoms = [MLP(shape, (vertical.hidden, width)) for shape in shapes]
        traffic = Traffic()
        noise = seeded(seed, CUT_NOISE_STREAM)  # the parties' private randomness, not shared
        params = meta_train(bottoms, slicer, train,
                            EpisodeSampler(vertical.ways, vertical.shots, vertical.queries),
                            vertical.steps, OPTIMIZERS[vertical.optimizer](vertical.lr),
                            seeded(seed, 0), up, down, noise, traffic)
        accuracy, ci95 = mean_ci95(meta_test(bottoms, params, slicer, episodes,
                                             seeded(seed, 2), up, noise))
        row[setting] = {"accuracy": accuracy, "ci95": ci95}
        if setting == "vertical":
            row["bytes_per_episode"] = {"up": traffic.up // vertical.steps,
                                        "down": traffic.down // vertical.steps}
    return row


def run_fewshot(config: Config, pools: tuple[ClientData, ClientData]) -> tuple[dict, list[dict]]:
    """The summary of a vertical few-shot run on `pools` (meta-training's and meta-test's
    examples), and each repeat's row (meta-test accuracy ± its 95% CI over episodes, per
    setting)."""
    vertical = config.vertical
    rows = [one_repeat(config, pools, repeat) for repeat in range(vertical.repeats)]
    up, down = protections(vertical)
    results = {}
    for setting in SETTINGS:
        mean, ci95 = mean_ci95(torch.tensor([r[setting]["accuracy"] for r in rows]))
        results[setting] = {"accuracy": {"mean": mean, "ci95": ci95}}
    privacy = {side: {"noise": p.noise, "clip": p.clip, "multiplier": p.multiplier,
                      "epsilon_per_release": finite(p.epsilon(1, vertical.delta))}
               for side, p in (("embedding", up), ("gradient", down))}
    summary = {
        "federation": "vertical", "data": vertical.data, "repeats": len(rows),
        "parties": vertical.parties,
        "episodes": {"ways": vertical.ways, "shots": vertical.shots,
                     "queries": vertical.queries, "test_queries": vertical.test_queries,
                     "steps": vertical.steps, "test_episodes": vertical.test_episodes},
        "bytes_per_episode": rows[0]["bytes_per_episode"], "results": results,
        "privacy": {**privacy, "delta": vertical.delta},
    }
    return summary, rows
