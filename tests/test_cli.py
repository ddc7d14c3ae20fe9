"""End-to-end: the `fedmeta` command on the bundled Omniglot, with a tiny model."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from fedmeta.build import bundled_omniglot
from fedmeta import cli
from fedmeta.cli import main
from fedmeta.data import EpisodeSampler, Episodes, load_omniglot_arrays, omniglot_federated
from fedmeta.resume import restore_run
from fedmeta.engine.rundir import RunDirectory
from fedmeta.engine.simulation import Simulation

TINY = ["model.hidden=8", "server.rounds=2", "server.clients_per_round=2", "eval.every=1",
        "eval.episodes=10", "eval.final_episodes=20", "task.ways=5", "learner.local_steps=2",
        "run.checkpoint_every=1"]


def demo(out, *overrides):
    args = ["demo", "--quiet", "--out", str(out)]
    for item in TINY + list(overrides):
        args += ["--set", item]
    return main(args)


def fedmeta(*args):
    return subprocess.run([sys.executable, "-m", "fedmeta.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "run"
    assert demo(out) == 0
    return out


def metrics(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_demo_writes_a_complete_run_directory(tiny_run):
    lines = metrics(tiny_run)
    assert [m["round"] for m in lines] == [1, 2]  # evaluated every round (eval.every=1)
    assert all("loss" in m and "val_accuracy" in m for m in lines)
    assert not any(key.startswith(("test_", "personal_")) for m in lines for key in m)
    summary = json.loads((tiny_run / "summary.json").read_text())
    best = max(lines, key=lambda m: m["val_accuracy"])  # the first of equals
    assert summary["selected"]["round"] == best["round"]
    assert summary["selected"]["accuracy"] == best["val_accuracy"]
    assert summary["validation_clients"] == 5
    assert summary["meta_test"]["episodes"] == 20
    assert 0.0 <= summary["meta_test"]["accuracy"] <= 1.0
    assert 0.0 <= summary["meta_test"]["pooled_accuracy"] <= 1.0  # the demo's eval.pooled
    assert all("val_pooled_accuracy" in m for m in lines)
    assert summary["test_clients"] == 20
    per_client = summary["meta_test"]["per_client_accuracy"]
    assert len(per_client) == summary["meta_test"]["clients"]
    assert min(per_client) >= 0.0 and max(per_client) <= 1.0
    assert not any("test_per_client_accuracy" in m for m in lines)  # the final meta-test only
    assert "hidden = 8" in (tiny_run / "config.toml").read_text()
    checkpoint = load_file(str(tiny_run / "checkpoints" / "round_00002.safetensors"))
    assert any(k.startswith("params/") for k in checkpoint)
    selected = {k.removeprefix("selected/"): v for k, v in checkpoint.items()
                if k.startswith("selected/")}
    assert selected.keys() == {k.removeprefix("params/") for k in checkpoint
                               if k.startswith("params/")}
    assert not list(tiny_run.rglob("*.tmp"))


def test_same_seed_gives_identical_metrics(tiny_run, tmp_path):
    assert demo(tmp_path / "again") == 0
    strip = lambda lines: [{k: v for k, v in m.items() if k != "seconds"} for m in lines]
    assert strip(metrics(tiny_run)) == strip(metrics(tmp_path / "again"))


def test_eval_on_held_out_clients_matches_the_run(tiny_run):
    result = fedmeta("eval", tiny_run, "--json", "--num-episodes", 20)
    assert result.returncode == 0, result.stderr
    evaluated = json.loads(result.stdout)
    summary = json.loads((tiny_run / "summary.json").read_text())
    assert evaluated["round"] == summary["selected"]["round"]  # the model the run kept
    assert evaluated["accuracy"] == pytest.approx(summary["meta_test"]["accuracy"])


def test_eval_bring_your_own_episodes(tiny_run, tmp_path):
    _, test = omniglot_federated(bundled_omniglot())
    episodes = EpisodeSampler(5, 1, 3).sample(test.client(0), 4, torch.Generator().manual_seed(1))
    as_uint8 = lambda x: (x.squeeze(2) * 255).round().to(torch.uint8).numpy()
    path = tmp_path / "episodes.npz"
    np.savez(path, support_x=as_uint8(episodes.support_x), support_y=episodes.support_y.numpy(),
             query_x=as_uint8(episodes.query_x), query_y=episodes.query_y.numpy())
    result = fedmeta("eval", tiny_run, "--episodes", path, "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["episodes"] == 4

    assert json.loads(result.stdout)["preprocessing"].startswith("binarized")

    np.savez(path, support_x=as_uint8(episodes.support_x), support_y=episodes.support_y.numpy())
    result = fedmeta("eval", tiny_run, "--episodes", path)
    assert result.returncode == 2 and "missing arrays query_x, query_y" in result.stderr


def test_grayscale_episodes_score_as_their_1_bit_version_on_a_1_bit_trained_model(tiny_run,
                                                                                 tmp_path):
    """The bundled Omniglot is 1-bit: the same drawings brought in grayscale (ink 0.6-0.9 on
    paper 0.1-0.4, at random) are thresholded as the training images were, so they score as
    their 1-bit version does; unthresholded, they would not."""
    _, test = omniglot_federated(bundled_omniglot())
    episodes = EpisodeSampler(5, 1, 5).sample(test.client(1), 20, torch.Generator().manual_seed(2))
    noise = torch.Generator().manual_seed(3)
    gray = lambda x: 0.1 + 0.8 * x + 0.3 * torch.rand(x.shape, generator=noise) * (1 - 2 * x)
    grayscale = Episodes(gray(episodes.support_x), episodes.support_y,
                         gray(episodes.query_x), episodes.query_y)
    scores = {}
    for name, batch in (("1-bit", episodes), ("grayscale", grayscale)):
        path = tmp_path / f"{name}.npz"
        np.savez(path, support_x=batch.support_x.squeeze(2).numpy(),
                 support_y=batch.support_y.numpy(), query_x=batch.query_x.squeeze(2).numpy(),
                 query_y=batch.query_y.numpy())
        result = fedmeta("eval", tiny_run, "--episodes", path, "--json")
        assert result.returncode == 0, result.stderr
        scores[name] = json.loads(result.stdout)["accuracy"]
    assert scores["1-bit"] == scores["grayscale"]
    experiment, params, *_ = restore_run(RunDirectory.open(tiny_run, "eval"),
                                         RunDirectory(tiny_run).latest_checkpoint())
    raw = [experiment.learner.accuracy(params, batch) for batch in (episodes, grayscale)]
    assert not torch.equal(*raw)  # the model does see the difference


def omniglot_file(path, keep, grayscale=False):
    """The bundled Omniglot's examples `keep(arrays)` as an Omniglot file of their own (its
    characters numbered 1..K again); `grayscale`: ink 160-255 on paper 0-99, at random."""
    a = load_omniglot_arrays(bundled_omniglot())
    rows = keep(a)
    images = a["images"][rows]
    if grayscale:
        rng = np.random.default_rng(0)
        images = np.where(images == 255, rng.integers(160, 256, images.shape),
                          rng.integers(0, 100, images.shape)).astype(np.uint8)
    char_id = np.unique(a["char_id"][rows], return_inverse=True)[1] + 1
    np.savez(path, images=images, char_id=char_id,
             **{key: a[key][rows] for key in ("alphabet", "character", "drawer", "split")})
    return path


def evaluated(capsys, *args):
    assert main(["eval", *map(str, args), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_eval_meta_tests_every_client_of_a_file(tiny_run, tmp_path, capsys):
    """`fedmeta eval --clients FILE`: the run's own meta-test alphabets brought as a file of
    new clients, in grayscale, are preprocessed as the 1-bit training images were and score
    exactly as the run's held-out evaluation (same clients, same episode stream); a whole
    Omniglot file brings all of its 50 alphabets."""
    held_out = evaluated(capsys, tiny_run, "--num-episodes", 20)
    path = omniglot_file(tmp_path / "new.npz", lambda a: a["split"] == "evaluation", True)
    new = evaluated(capsys, tiny_run, "--clients", path, "--num-episodes", 20)
    assert new["accuracy"] == held_out["accuracy"] and new["ci95"] == held_out["ci95"]
    assert (new["held_out_clients"], new["source"]) == (20, f"clients of {path}")
    assert evaluated(capsys, tiny_run, "--clients", bundled_omniglot(),
                     "--num-episodes", 20)["held_out_clients"] == 50
    assert main(["eval", str(tiny_run), "--clients", str(path), "--num-episodes", "20"]) == 0
    assert f"20 episodes from 20 of 20 clients of {path}" in capsys.readouterr().out


def test_eval_scores_other_tasks_with_the_kept_model(tiny_run, capsys):
    """`--set eval.*` scores the run's kept model on other tasks (the demo's ProtoNets at
    3-way 2-shot) exactly as an experiment built with those settings does; a key that would
    change the model or its data is refused in one line."""
    sets = ["eval.ways=3", "eval.shots=2"]
    other = evaluated(capsys, tiny_run, "--num-episodes", 20, *[a for s in sets
                                                                for a in ("--set", s)])
    experiment, *_, (round_index, params, _) = restore_run(
        RunDirectory.open(tiny_run, "eval"), RunDirectory(tiny_run).latest_checkpoint(),
        overrides=sets)
    assert (experiment.config.eval.ways, experiment.config.eval.shots) == (3, 2)
    direct = Simulation(experiment).evaluate(params, 20)
    assert (other["accuracy"], other["round"], other["overrides"]) == (
        direct["test_accuracy"], round_index, sets)
    assert main(["eval", str(tiny_run), "--set", "task.ways=3"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "eval --set takes eval.* keys" in err


def test_eval_pooled_scores_as_the_run_s_meta_test_did(tiny_run, capsys):
    """The demo meta-tests both ways (`eval.pooled`); `--pooled` on a run scores as its
    summary did, and without it (`--set eval.pooled=false`) the federated protocol alone."""
    summary = json.loads((tiny_run / "summary.json").read_text())["meta_test"]
    result = evaluated(capsys, tiny_run, "--pooled", "--num-episodes", 20)
    assert (result["accuracy"], result["pooled_accuracy"], result["pooled_ci95"]) == (
        summary["accuracy"], summary["pooled_accuracy"], summary["pooled_ci95"])
    alone = evaluated(capsys, tiny_run, "--set", "eval.pooled=false", "--num-episodes", 20)
    assert alone["accuracy"] == summary["accuracy"] and "pooled_accuracy" not in alone
    assert main(["eval", str(tiny_run), "--pooled", "--num-episodes", "20"]) == 0
    assert "with the clients pooled into one" in capsys.readouterr().out
    assert main(["eval", str(tiny_run), "--pooled", "--episodes", "any.npz"]) == 2
    assert "--episodes brings its own" in capsys.readouterr().err


@pytest.fixture(scope="module")
def finetuned_run(tmp_path_factory):
    """The tiny demo trained by FedAvg and meta-tested by fine-tuning (FedAvg+FT)."""
    out = tmp_path_factory.mktemp("runs") / "fedavg-ft"
    assert demo(out, "learner.algorithm='fedavg-ft'", "learner.finetune_steps=3",
                "learner.finetune_lr=0.05", "eval.pooled=false") == 0
    return out


def test_eval_chooses_the_adaptation_on_the_validation_clients(finetuned_run, monkeypatch,
                                                                 capsys):
    """`--choose` scores each value on the meta-validation clients' stream of training (the
    run's own value gives the kept round's validation accuracy again), keeps the best, and
    only then scores the meta-test clients, once, as a run with that value would."""
    on = []
    evaluate = Simulation.evaluate
    monkeypatch.setattr(Simulation, "evaluate", lambda self, *a, **k: (
        on.append(k.get("on", "test")), evaluate(self, *a, **k))[1])
    result = evaluated(capsys, finetuned_run, "--choose",
                       "learner.finetune_lr=0.5, 0.05,0.000001", "--num-episodes", 20)
    assert on == ["val", "val", "val", "test"]
    assert [trial["setting"] for trial in result["validation"]] == [
        {"learner.finetune_lr": lr} for lr in (0.5, 0.05, 1e-6)]
    assert all(not key.startswith("test_") for trial in result["validation"] for key in trial)
    summary = json.loads((finetuned_run / "summary.json").read_text())
    assert result["validation"][1]["val_accuracy"] == summary["selected"]["accuracy"]
    scores = [trial["val_accuracy"] for trial in result["validation"]]
    best = scores.index(max(scores))  # the first of equals
    assert result["chosen"] == f"learner.finetune_lr={['0.5', '0.05', '0.000001'][best]}"
    run = RunDirectory.open(finetuned_run, "test")
    experiment, *_, selected = restore_run(run, run.latest_checkpoint(), None, [result["chosen"]])
    direct = Simulation(experiment).evaluate(selected[1], 20)
    assert (result["accuracy"], result["ci95"]) == (direct["test_accuracy"], direct["test_ci95"])
    assert main(["eval", str(finetuned_run), "--choose", "learner.finetune_lr=0.5,0.05"]) == 0
    assert "learner.finetune_lr=" in capsys.readouterr().out.splitlines()[0]


def test_eval_chooses_a_grid_of_adaptation_settings_jointly(finetuned_run, capsys):
    """Two `--choose` settings: every combination scored on validation, in order, and the
    best combination (both its values) is the one meta-tested."""
    result = evaluated(capsys, finetuned_run, "--choose", "learner.finetune_lr=0.5,0.000001",
                       "--choose", "learner.finetune_steps=1,3", "--num-episodes", 20)
    assert [trial["setting"] for trial in result["validation"]] == [
        {"learner.finetune_lr": lr, "learner.finetune_steps": steps}
        for lr in (0.5, 1e-6) for steps in (1, 3)]
    scores = [trial["val_accuracy"] for trial in result["validation"]]
    best = result["validation"][scores.index(max(scores))]["setting"]
    chosen = [f"{key}={value}" for key, value in best.items()]
    run = RunDirectory.open(finetuned_run, "test")
    experiment, *_, selected = restore_run(run, run.latest_checkpoint(), None, chosen)
    direct = Simulation(experiment).evaluate(selected[1], 20)
    assert (result["accuracy"], result["ci95"]) == (direct["test_accuracy"], direct["test_ci95"])
    assert main(["eval", str(finetuned_run), "--choose", "learner.finetune_lr=0.5,0.05",
                 "--choose", "learner.finetune_lr=0.1,0.2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "names a setting twice" in err


@pytest.mark.parametrize("choice, message", [
    ("learner.finetune_lr=0.05", "needs two or more distinct values"),
    ("learner.finetune_lr=0.05,0.05", "needs two or more distinct values"),
    ("model.hidden=8,16", "--choose takes a new client's adaptation setting"),
    ("learner.inner_lr=0.1,0.4", "fedavg-ft does not read it when a new client adapts"),
    ("learner.finetune_lr=0.1,-1", "learner.finetune_lr"),
])
def test_bad_choices_exit_2_with_one_line(finetuned_run, choice, message, capsys):
    assert main(["eval", str(finetuned_run), "--choose", choice]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


def test_choosing_needs_validation_clients(tmp_path, capsys):
    out = tmp_path / "run"
    assert demo(out, "learner.algorithm='fedavg-ft'", "learner.finetune_steps=1",
                "data.validation_fraction=0", "eval.pooled=false") == 0
    capsys.readouterr()
    assert main(["eval", str(out), "--choose", "learner.finetune_lr=0.1,0.01"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "would be selection on the test set" in err


@pytest.mark.parametrize("args, message", [
    (["--clients", "/nonexistent/new.npz"], "/nonexistent/new.npz does not exist"),
    (["--clients", "EMPTY"], "empty.npz: missing arrays alphabet, character"),
])
def test_bad_new_clients_exit_2_with_one_line(tiny_run, tmp_path, args, message, capsys):
    np.savez(tmp_path / "empty.npz", nothing=np.zeros(1))
    args = [str(tmp_path / "empty.npz") if a == "EMPTY" else a for a in args]
    assert main(["eval", str(tiny_run), *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


def test_new_clients_or_episodes_not_both(tiny_run, capsys):
    with pytest.raises(SystemExit) as refusal:
        main(["eval", str(tiny_run), "--clients", "/x.npz", "--episodes", "/y.npz"])
    assert refusal.value.code == 2 and "not allowed with" in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["demo", "--set", "server.rounds=0"], "server.rounds"),
    (["demo", "--set", "learner.bogus=1"], "unknown key 'learner.bogus'"),
    (["demo", "--set", "data.path='/nonexistent/omniglot.npz'"], "/nonexistent/omniglot.npz"),
    (["run", "/nonexistent/config.toml"], "no such file"),
    (["eval", "/nonexistent/run"], "not a run directory"),
    # values the config's ranges admit and a library function refuses, converted where the
    # config reaches it (errors.config_errors)
    (["demo", "--set", "data.partition='random'", "--set", "data.num_clients=5000"],
     "config error: num_clients=5000 exceeds the 964 examples"),
    (["demo", "--set", "privacy.noise_multiplier=1.0", "--set", "privacy.clip_norm=1.0",
      "--set", "privacy.adaptive_clipping=true", "--set", "privacy.clip_count_noise=0.1"],
     "config error: adaptive clipping's count noise 0.1 must exceed half"),
])
def test_bad_input_exits_2_with_one_line(tmp_path, args, message, capsys):
    out = ["--out", str(tmp_path / "r")] if args[0] != "eval" else []
    assert main([*args, *out]) == 2  # in this process: a traceback would fail the test here
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
    assert not (tmp_path / "r").exists()


def test_a_bug_is_no_bad_input_and_shows_its_traceback(monkeypatch):
    """Only a UserError is the user's to fix; a ValueError from inside fedmeta is a bug."""
    def broken(args):
        raise ValueError("a bug")

    monkeypatch.setattr(cli, "cmd_demo", broken)
    with pytest.raises(ValueError, match="a bug"):
        main(["demo"])


def test_existing_run_directory_is_left_untouched(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text("precious\n")
    assert demo(run) == 2
    assert (run / "metrics.jsonl").read_text() == "precious\n"
