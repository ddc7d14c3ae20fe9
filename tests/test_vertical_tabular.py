"""A vertical run's comparisons: protection changes only what crosses the cut (the label
party alone and the centralized model do not move), and its epsilon is reported."""

import pytest

from fedmeta.config import load_config
from fedmeta.vertical.protection import Protection
from fedmeta.vertical.tabular import aligned_parties, run_tabular

CONFIG = "configs/vertical_breast_cancer.toml"
QUICK = ["vertical.epochs=3", "vertical.repeats=2"]


@pytest.fixture(scope="module")
def plain():
    config = load_config(CONFIG, QUICK)
    return run_tabular(config, aligned_parties(config))


def test_departments_are_aligned_on_the_patients_all_hold(plain):
    summary, rows = plain
    assert [p["rows"] for p in summary["parties"]] == [455, 455, 455]  # 80% of 569
    assert [p["columns"] for p in summary["parties"]] == [10, 10, 10]
    assert 200 < summary["aligned_rows"] < 380  # about 0.8^3 of 569 = 291
    assert rows[0]["seed"] == 0 and rows[1]["seed"] == 1


@pytest.mark.parametrize("side", ["gradient", "embedding"])
def test_noise_moves_only_the_split_network(plain, side):
    config = load_config(CONFIG, QUICK + [f"vertical.{side}_noise='gaussian'",
                                          f"vertical.{side}_clip=0.5",
                                          f"vertical.{side}_noise_multiplier=8.0"])
    summary, rows = run_tabular(config, aligned_parties(config))
    plain_rows = plain[1]
    for row, before in zip(rows, plain_rows):
        assert row["label_party"] == before["label_party"]
        assert row["centralized"] == before["centralized"]
        assert row["vertical"] != before["vertical"]
    expected = Protection("gaussian", 0.5, 8.0).epsilon(3, config.vertical.delta)
    assert summary["privacy"][side]["epsilon_per_row"] == pytest.approx(expected)
    other = "embedding" if side == "gradient" else "gradient"
    assert summary["privacy"][other]["epsilon_per_row"] is None
    assert plain[0]["privacy"][side]["epsilon_per_row"] is None
