"""The deployed vertical protocol (fedmeta.vertical.protocol), its parties in this process:
without protection noise it computes what the simulation computes for its first seed (scores,
losses, bytes); with noise each party draws its own; parties that are not numbered 0..K-1 with
the label party first are one-line errors, and so is a config whose parties would not be the
Flower nodes' own files."""

import pytest

from fedmeta.config import load_config
from fedmeta.errors import UserError
from fedmeta.flower.vertical_server import run_vertical
from fedmeta.vertical.parties import breast_cancer_departments
from fedmeta.vertical.party import PartyRun
from fedmeta.vertical.protocol import answer, run_deployed
from fedmeta.vertical.tabular import aligned_parties, one_repeat

CONFIG = "configs/vertical_breast_cancer.toml"
QUICK = ["vertical.epochs=3", "vertical.repeats=1", "vertical.batch_size=64"]


def deployed(config, parties):
    """`run_deployed` over parties each in a `PartyRun` of its own, messages passed as is."""
    runs = {p: PartyRun(config, party, p) for p, party in enumerate(parties)}
    sent = []

    def send(action, messages):
        sent.append(action)
        return {p: answer(runs[p], action, message) for p, message in messages.items()}

    return run_deployed(config, {p: run.describe() for p, run in runs.items()}, send), sent


def departments(config):
    vertical = config.vertical
    return breast_cancer_departments(vertical.parties, vertical.holding, config.seed)


def test_deployment_computes_the_simulations_split_network():
    config = load_config(CONFIG, QUICK)
    summary, sent = deployed(config, departments(config))
    data = aligned_parties(config)
    simulated = one_repeat(config, data, 0)
    assert summary["aligned_rows"] == len(data.y)
    assert summary["psi_bytes"] == data.psi_bytes
    assert summary["results"]["vertical"] == pytest.approx(simulated["vertical"], rel=1e-5)
    assert summary["bytes_per_epoch"] == simulated["bytes_per_epoch"]
    assert summary["inference_bytes"] == simulated["inference_bytes"]
    steps = 3 * -(-simulated["train_rows"] // 64)
    assert sent.count("embed") == sent.count("label-step") == steps


def test_each_deployed_party_draws_its_own_noise():
    config = load_config(CONFIG, QUICK + ["vertical.gradient_noise='gaussian'",
                                          "vertical.gradient_clip=0.5",
                                          "vertical.gradient_noise_multiplier=1.0"])
    first, second = (deployed(config, departments(config))[0]["losses"] for _ in range(2))
    assert first != second  # no seed another party knows: no two runs draw the same


def test_parties_must_be_numbered_from_the_label_party():
    config = load_config(CONFIG, QUICK)
    label, other, third = departments(config)
    with pytest.raises(UserError, match="party 0 is the label party"):
        PartyRun(config, other, 0)
    with pytest.raises(UserError, match="parties 0..K-1"):
        runs = {0: PartyRun(config, label, 0), 2: PartyRun(config, third, 2)}
        run_deployed(config, {p: r.describe() for p, r in runs.items()}, None)


def test_flower_refuses_parties_it_would_not_read_from_their_nodes():
    with pytest.raises(UserError, match="each party's SuperNode reads its own CSV"):
        run_vertical(None, load_config(CONFIG, QUICK))  # breast-cancer: not the nodes' files
