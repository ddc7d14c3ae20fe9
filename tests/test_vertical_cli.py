"""`fedmeta run` of a vertical config: a complete run directory, parties from CSV files
aligned on exactly their common ids, and bad parties (duplicate ids, no overlap, rows of the
wrong width) as one line and exit 2, with no run directory created."""

import csv
import json

import numpy as np
import pytest

from fedmeta.cli import main
from fedmeta.config import load_config
from test_cli import fedmeta

QUICK = ["vertical.epochs=2", "vertical.repeats=2"]


def write_party(path, ids, x, y=None):
    with open(path, "w", newline="") as handle:
        out = csv.writer(handle)
        out.writerow(["id", *(f"c{j}" for j in range(x.shape[1])),
                      *(["label"] if y is not None else [])])
        for row, i in enumerate(ids):
            out.writerow([i, *x[row], *([y[row]] if y is not None else [])])


def parties(tmp_path, label_ids, other_ids, seed=0):
    """A label party and another party, their columns together deciding the label."""
    rng = np.random.default_rng(seed)
    people = sorted(set(label_ids) | set(other_ids))
    features = {i: rng.normal(size=5) for i in people}
    label = {i: int(features[i][0] + features[i][3] > 0) for i in people}
    a, b = tmp_path / "label.csv", tmp_path / "other.csv"
    write_party(a, label_ids, np.array([features[i][:3] for i in label_ids]),
                [label[i] for i in label_ids])
    write_party(b, other_ids, np.array([features[i][3:] for i in other_ids]))
    return a, b


def config_file(tmp_path, files):
    path = tmp_path / "vertical.toml"
    listed = ", ".join(f"'{f}'" for f in files)
    path.write_text(f'federation = "vertical"\n[vertical]\ndata = "files"\n'
                    f"party_files = [{listed}]\n")
    return path


def run(config, out, *overrides):
    args = ["run", str(config), "--quiet", "--out", str(out)]
    for item in [*QUICK, *overrides]:
        args += ["--set", item]
    return main(args)


def test_breast_cancer_config_writes_a_complete_run_directory(tmp_path, capsys):
    out = tmp_path / "run"
    result = fedmeta("run", "configs/vertical_breast_cancer.toml", "--quiet", "--out", out,
                     *[arg for item in QUICK for arg in ("--set", item)])
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "summary.json").read_text())
    rows = [json.loads(line) for line in (out / "vertical.jsonl").read_text().splitlines()]
    assert [r["seed"] for r in rows] == [0, 1]
    assert summary["aligned_rows"] == summary["train_rows"] + summary["test_rows"]
    for setting in ("vertical", "label_party", "centralized"):
        assert 0.5 < summary["results"][setting]["auc"]["mean"] <= 1
    # 2 other departments x train rows x 4 floats x 4 bytes, each way
    assert summary["bytes_per_epoch"] == {"up": 2 * summary["train_rows"] * 16,
                                          "down": 2 * summary["train_rows"] * 16}
    assert load_config(out / "config.toml").federation == "vertical"
    # eval, report and resume read rounds and checkpoints, which a vertical run has not
    capsys.readouterr()
    for args in (["eval", out], ["report", out, "--out", tmp_path / "report"],
                 ["run", "--resume", out]):
        assert main([str(arg) for arg in args]) == 2
        refused = capsys.readouterr().err
        assert refused.count("\n") == 1 and "is a vertical run" in refused, refused


def test_parties_from_files_align_on_their_common_ids(tmp_path):
    label_ids = [f"p{i:03d}" for i in range(0, 120)]
    other_ids = [f"p{i:03d}" for i in range(150, 30, -1)]  # another order; p031-p119 shared
    out = tmp_path / "run"
    files = parties(tmp_path, label_ids, other_ids)
    assert run(config_file(tmp_path, files), out, "vertical.epochs=20") == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["aligned_rows"] == len(set(label_ids) & set(other_ids)) == 89
    assert summary["results"]["vertical"]["accuracy"]["mean"] > 0.7


def duplicate(tmp_path):
    return parties(tmp_path, ["a1", "a2", "a1", "a3"], ["a1", "a2"])


def disjoint(tmp_path):
    return parties(tmp_path, [f"a{i}" for i in range(10)], [f"b{i}" for i in range(10)])


def ragged(tmp_path):
    files = parties(tmp_path, [f"a{i}" for i in range(10)], [f"a{i}" for i in range(10)])
    with open(files[1], "a") as handle:
        handle.write("a99,1.0\n")  # one field short
    return files


def not_a_number(tmp_path):
    files = parties(tmp_path, [f"a{i}" for i in range(10)], [f"a{i}" for i in range(10)])
    with open(files[1], "a") as handle:
        handle.write("a99,1.0,n/a\n")
    return files


def unlabelled(tmp_path):
    files = parties(tmp_path, [f"a{i}" for i in range(10)], [f"a{i}" for i in range(10)])
    return files[1], files[0]  # the label party's file second


@pytest.mark.parametrize("make, message", [
    (duplicate, "label.csv: id 'a1' appears 2 times"),
    (disjoint, "other.csv shares no id with label.csv (the label party)"),
    (ragged, "other.csv line 12: 2 fields, the header has 3"),
    (not_a_number, "other.csv: a feature value is not a number"),
    (unlabelled, "other.csv: the label party's file needs a 'label' column"),
])
def test_bad_parties_exit_2_with_one_line(tmp_path, capsys, make, message):
    out = tmp_path / "run"
    assert run(config_file(tmp_path, make(tmp_path)), out) == 2
    stderr = capsys.readouterr().err
    assert stderr.count("\n") == 1 and message in stderr, stderr
    assert not out.exists()


def test_a_horizontal_section_in_a_vertical_run_is_one_line(tmp_path):
    result = fedmeta("run", "configs/vertical_breast_cancer.toml", "--set", "server.rounds=3",
                     "--out", tmp_path / "run")
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "federation = 'vertical' does not read [server]" in result.stderr
    assert not (tmp_path / "run").exists()


def test_noise_without_its_scale_is_one_line(tmp_path, capsys):
    out = tmp_path / "run"
    assert run("configs/vertical_breast_cancer.toml", out,
               "vertical.gradient_noise=gaussian") == 2
    stderr = capsys.readouterr().err
    assert stderr.count("\n") == 1 and "vertical.gradient_noise = 'gaussian' needs" in stderr
    assert not out.exists()


def test_few_shot_config_writes_a_complete_run_directory(tmp_path):
    out = tmp_path / "run"
    assert main(["run", "configs/vertical_omniglot_strips.toml", "--quiet", "--out", str(out),
                 "--set", "vertical.steps=20", "--set", "vertical.test_episodes=5",
                 "--set", "vertical.repeats=1"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["results"]) == {"vertical", "label_party", "centralized"}
    # 5-way 1-shot, 5 queries: 30 rows of 32 float32 each way an episode
    assert summary["bytes_per_episode"] == {"up": 30 * 32 * 4, "down": 30 * 32 * 4}
    row = json.loads((out / "vertical.jsonl").read_text())
    assert 0 <= row["vertical"]["accuracy"] <= 1 and row["seed"] == 0


def test_a_vertical_config_has_no_clients_to_export(tmp_path, capsys):
    assert main(["export-clients", "configs/vertical_breast_cancer.toml",
                 str(tmp_path / "clients")]) == 2
    stderr = capsys.readouterr().err
    assert stderr.count("\n") == 1 and "runs with `fedmeta run` only" in stderr
    assert not (tmp_path / "clients").exists()
