"""Vertical ProtoNets: the exchange's gradients are the whole network's, and on the bundled
Omniglot the two halves together beat the label party's half alone on unseen characters;
FEMNIST's halves meta-test on writers held out."""

import numpy as np
import torch

from fedmeta.build import build_vertical, bundled_omniglot
from fedmeta.config import load_config
from fedmeta.data import ClientData, EpisodeSampler
from fedmeta.data.omniglot import load_omniglot_arrays
from fedmeta.learners.protonet import prototype_logits, prototypes
from fedmeta.models import MLP
from fedmeta.optim import adam
from fedmeta.seeding import seeded
from fedmeta.vertical.fewshot import femnist_pools
from fedmeta.vertical.protonet import (episode_loss, episode_rows, meta_test, meta_train,
                                       width_slices)
from fedmeta.vertical.split import Traffic, exchange
from test_cli import fedmeta


def test_exchange_gives_the_whole_networks_episode_gradient():
    torch.manual_seed(0)
    sampler = EpisodeSampler(3, 2, 2)
    pool = ClientData(torch.randint(0, 256, (60, 6, 8), dtype=torch.uint8),
                      torch.arange(60) % 5)
    x, y, support = episode_rows(sampler.sample(pool, 1, seeded(0)), 0, seeded(1))
    bottoms = [MLP((1, 6, 4), (7, 3)), MLP((1, 6, 4), (7, 5))]
    params = [dict(b.named_parameters()) for b in bottoms]
    head = lambda _, hs: episode_loss(hs, y, support, 3)[0]  # noqa: E731
    grads, _, _, _ = exchange(bottoms, params, width_slices(2)(x), head, {})
    # the reference: ordinary modules, prototypes of the concatenated embeddings, backward()
    z = torch.cat([b(s) for b, s in zip(bottoms, width_slices(2)(x))], 1)
    logits = prototype_logits(z[~support], prototypes(z[support], y[support], 3))
    torch.nn.functional.cross_entropy(logits, y[~support]).backward()
    for bottom, g in zip(bottoms, grads):
        for name, param in bottom.named_parameters():
            torch.testing.assert_close(g[name], param.grad, rtol=1e-5, atol=1e-7)


def test_two_halves_beat_the_label_partys_half_on_unseen_characters():
    arrays = load_omniglot_arrays(bundled_omniglot())
    background = arrays["split"] == "background"

    def pool(mask):
        return ClientData(torch.from_numpy(arrays["images"][mask]),
                          torch.from_numpy(arrays["char_id"][mask]).long())

    episodes = EpisodeSampler(5, 1, 5).sample(pool(~background), 100, seeded(1))
    accuracy = {}
    for setting, parties in (("vertical", 2), ("label party", 1)):
        torch.manual_seed(0)
        bottoms = [MLP((1, 28, 14), (64, 32)) for _ in range(parties)]
        slicer = lambda x, n=parties: width_slices(2)(x)[:n]  # noqa: E731
        traffic = Traffic()
        params = meta_train(bottoms, slicer, pool(background), EpisodeSampler(5, 1, 5), 300,
                            adam(1e-3), seeded(0), traffic=traffic)
        accuracy[setting] = meta_test(bottoms, params, slicer, episodes, seeded(2)).mean()
        # 30 rows of 32 float32 embeddings up, their gradients down, per episode
        assert (traffic.up, traffic.down) == ((parties - 1) * 300 * 30 * 32 * 4,) * 2
    assert accuracy["vertical"] > accuracy["label party"] + 0.04 > 0.2 + 0.04, accuracy


def test_femnist_strips_meta_test_on_writers_held_out(shared_data, tmp_path):
    path = shared_data / "femnist.npz"
    train, test = femnist_pools(path, seed=0)
    with np.load(path) as arrays:
        assert len(train) + len(test) == len(arrays["labels"])
    assert 0.1 < len(test) / (len(train) + len(test)) < 0.3  # 20% of the writers
    config = load_config("configs/vertical_femnist_strips.toml",
                         [f"vertical.path='{path}'", "vertical.steps=100",
                          "vertical.test_episodes=50", "vertical.repeats=1"])
    summary, _ = build_vertical(config)()
    assert summary["results"]["vertical"]["accuracy"]["mean"] > 0.3  # 5-way: chance 0.2
    missing = fedmeta("run", "configs/vertical_femnist_strips.toml", "--out", tmp_path / "r",
                      "--set", f"vertical.path='{tmp_path / 'none.npz'}'")
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1, missing.stderr
    assert not (tmp_path / "r").exists()
