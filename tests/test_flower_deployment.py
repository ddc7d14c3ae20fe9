"""End to end on Flower: a SuperLink and SuperNodes as real processes on 127.0.0.1 running
fedmeta's ServerApp and ClientApp (examples/flower), each client reading its own file."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.common.config import flatten_dict

from fedmeta.build import Datasets, build_experiment
from fedmeta.cli import main as cli
from fedmeta.config import apply_overrides, validate
from fedmeta.data.client_files import clients_federated
from fedmeta.engine.checkpoint import load_checkpoint
from fedmeta.engine.simulation import Simulation
from fedmeta.privacy.encryption import CkksKeys
from flower_deployment import BIN, ENV, Deployment, make_node_key
from ratings_file import write_ratings
from test_data_shakespeare import arrays as shakespeare_arrays

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

APP = Path(__file__).parents[1] / "examples" / "flower"
OVERRIDES = ["server.rounds=2", "server.clients_per_round=3", "model.hidden=8",
             "eval.every=0", "run.checkpoint_every=1",
             "flower.round_timeout=120.0", "flower.eval_episodes_per_client=4"]


def app_config(overrides: list[str]) -> dict:
    """The example app's fedmeta config with `overrides`, as the ServerApp reads it."""
    data = tomllib.loads((APP / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["config"]
    data.pop("set")
    return apply_overrides(data, overrides)


def run_config(overrides: list[str]) -> str:
    """Overrides as `flwr run --run-config` takes them (the last of a key, strings quoted),
    those of keys the app's table does not list in its `set` key."""
    def quoted(value: str) -> str:
        try:
            tomllib.loads(f"v = {value}")
            return value
        except tomllib.TOMLDecodeError:
            return f'"{value}"'
    listed = set(flatten_dict(app_config([])))
    last = dict(item.split("=", 1) for item in overrides)
    unlisted = " ".join(f"{key}={value}" for key, value in last.items() if key not in listed)
    return " ".join([f"{key}={quoted(value)}" for key, value in last.items() if key in listed]
                    + ([f'set="{unlisted}"'] if unlisted else []))


def logged_metrics(out_dir: Path) -> list[dict]:
    """The rounds' metrics a run directory logged."""
    (run,) = out_dir.iterdir()
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


class Absent:
    """Faults as a simulation takes them (`Faults.absent`): these clients never report."""

    def __init__(self, reasons: dict[int, str]) -> None:
        self.reasons = reasons

    def absent(self, round_index: int, cohort: list[int]) -> dict[int, str]:
        return {c: reason for c, reason in self.reasons.items() if c in cohort}


def simulated_run(simulated: Simulation) -> tuple[dict[str, torch.Tensor], list[dict]]:
    """A simulation's final params and its rounds' metrics."""
    rounds = []
    params = simulated.run([lambda round_index, params, state, metrics: rounds.append(metrics)])
    return params, rounds


def distance(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """The L2 distance between two params."""
    return float(torch.cat([(a[k] - b[k]).flatten() for k in b]).norm())


def final_params(out_dir: Path, round_index: int) -> dict[str, torch.Tensor]:
    """The params a run directory's checkpoint holds after `round_index`."""
    (run,) = out_dir.iterdir()
    return load_checkpoint(run / "checkpoints" / f"round_{round_index:05d}.safetensors")[0]


def simulation(files: list[Path], validation: list[Path], held_out: list[Path],
               overrides: list[str]) -> Simulation:
    config = validate(app_config(overrides))
    return Simulation(build_experiment(config, Datasets(
        clients_federated(files), clients_federated(validation), clients_federated(held_out))))


def start_nodes(deployment: Deployment, files: list[Path], held_out: list[Path],
                key: Path | None = None, validation: list[Path] = ()) -> list:
    nodes = [deployment.start_supernode(f"node{i}", f'data-path="{path}"' + (
        f' ckks-key="{key}"' if key else "")) for i, path in enumerate(files)]
    nodes += [deployment.start_supernode(f"heldout{i}", f'data-path="{path}" held-out=true')
              for i, path in enumerate(held_out)]
    nodes += [deployment.start_supernode(f"validation{i}", f'data-path="{path}" validation=true')
              for i, path in enumerate(validation)]
    for node in nodes:
        assert node.wait_for("SuperNode ID:", 90), node.text()[-2000:]
    return nodes


def test_maml_on_a_deployment_matches_the_simulation_and_survives_a_killed_node(
        tmp_path, client_files):
    files, held_out, validation = client_files
    keys = CkksKeys.generate()
    (tmp_path / "secret.ckks").write_bytes(keys.secret)
    with Deployment(tmp_path / "deployment") as deployment:
        deployment.start_superlink()
        nodes = start_nodes(deployment, files, held_out, tmp_path / "secret.ckks", validation)
        # 1. two rounds of FedMeta (MAML): the same params as the in-process simulation;
        # evaluated after round 2 on the meta-validation node, meta-tested on the other once
        plain = OVERRIDES + [f"run.out_dir={tmp_path / 'plain'}", "eval.every=2"]
        status = deployment.run(APP, run_config(plain))
        assert status["status"] == "finished:completed", deployment.logs(status["run-id"])
        simulated = simulation(files, validation, held_out, plain)
        expected, want = simulated_run(simulated)
        got = final_params(tmp_path / "plain", 2)
        for key in expected:
            torch.testing.assert_close(got[key], expected[key], rtol=1e-4, atol=1e-6)
        rounds = logged_metrics(tmp_path / "plain")
        for got_round, want_round in zip(rounds, want, strict=True):
            for key in ("round", "clients", "skipped", "bytes_down", "bytes_up"):
                assert got_round[key] == want_round[key], key
            assert got_round["loss"] == pytest.approx(want_round["loss"], rel=1e-4)
        assert "val_accuracy" in rounds[1] and not any(k.startswith("test_") for r in rounds
                                                       for k in r)
        (run,) = (tmp_path / "plain").iterdir()
        summary = json.loads((run / "summary.json").read_text())
        assert summary["selected"]["round"] == 2 and "accuracy" in summary["meta_test"]
        # 2. CKKS: clients encrypt their updates after the client stages (here a norm bound of
        # 0.02, which binds: their updates' norm is 0.044), the server adds ciphertexts, a
        # key holder decrypts the sum: round 1 as the simulation's to 1e-4 relative (later
        # rounds drift: local Adam turns 1e-8 differences in near-zero gradients into +-lr)
        encrypted = OVERRIDES + [f"run.out_dir={tmp_path / 'ckks'}", "aggregation.secure=ckks",
                                 "aggregation.norm_bound=0.02"]
        status = deployment.run(APP, run_config(encrypted))
        assert status["status"] == "finished:completed", deployment.logs(status["run-id"])
        init = simulated.experiment.learner.init_params()
        bounded = simulation(files, validation, held_out, encrypted)
        expected = bounded.round(1, init, bounded.experiment.pipeline.init(init))[0]
        got, unbounded = final_params(tmp_path / "ckks", 1), final_params(tmp_path / "plain", 1)
        step = distance(expected, init)
        assert distance(got, expected) / step < 1e-4, (distance(got, expected), step)
        assert distance(unbounded, expected) / step > 0.5  # the bound changed the round
        # 3. a SuperNode killed while round 2 runs: the round completes with the others
        killed = OVERRIDES + [f"run.out_dir={tmp_path / 'killed'}",
                              "flower.round_timeout=30.0", "server.min_clients=2"]
        started = "Start `flwr-clientapp` process"  # a SuperNode's log line per message
        before = nodes[2].text().count(started)
        run_id = deployment.submit(APP, run_config(killed))
        assert nodes[2].wait_for(started, 300, count=before + 3)  # describe, round 1, round 2
        nodes[2].stop(signal.SIGKILL)
        status = deployment.wait(run_id)
        assert status["status"] == "finished:completed", deployment.logs(run_id)
        assert [r["clients"] for r in logged_metrics(tmp_path / "killed")] == [3, 2]


@pytest.mark.slow
def test_personal_learners_and_an_aborted_round_on_a_deployment(tmp_path, client_files):
    """The rest of the deployment's checks, outside CI's 20 minutes: pFedHN and FedRep end
    with the simulation's params; a round short of server.min_clients is aborted."""
    files, held_out, validation = client_files
    keys = CkksKeys.generate()
    (tmp_path / "secret.ckks").write_bytes(keys.secret)
    with Deployment(tmp_path / "deployment") as deployment:
        deployment.start_superlink()
        start_nodes(deployment, files, held_out, tmp_path / "secret.ckks", validation)
        init = simulation(files, validation, held_out, OVERRIDES).experiment.learner.init_params()
        # 1. pFedHN: each node trains the model its embedding generates, the server pulls
        # the deltas back through its hypernetwork: the same params as the simulation
        hypernet = OVERRIDES + [f"run.out_dir={tmp_path / 'pfedhn'}", "learner.algorithm=pfedhn"]
        status = deployment.run(APP, run_config(hypernet))
        assert status["status"] == "finished:completed", deployment.logs(status["run-id"])
        expected = simulation(files, validation, held_out, hypernet).run()
        got = final_params(tmp_path / "pfedhn", 2)
        assert "embeddings.weight" in got
        for key in expected:
            torch.testing.assert_close(got[key], expected[key], rtol=1e-4, atol=1e-6)
        # 2. FedRep: each node keeps its client's head from round to round, as the
        # simulation keeps it for the client: the same shared params (local SGD: Adam's
        # steps of +-lr on near-zero gradients would amplify float differences)
        heads = OVERRIDES + [f"run.out_dir={tmp_path / 'fedrep'}", "learner.algorithm=fedrep",
                             "learner.head_steps=2", "learner.optimizer=sgd", "learner.lr=0.05"]
        status = deployment.run(APP, run_config(heads))
        assert status["status"] == "finished:completed", deployment.logs(status["run-id"])
        expected = simulation(files, validation, held_out, heads).run()
        got = final_params(tmp_path / "fedrep", 2)
        assert got.keys() == expected.keys() and "head.weight" not in got
        for key in expected:
            torch.testing.assert_close(got[key], expected[key], rtol=1e-4, atol=1e-6)
        # 3. a round with fewer clients than server.min_clients is aborted, the model as it
        # was (no DP noise to release); the time budget then ends the run cleanly
        aborted = OVERRIDES + [f"run.out_dir={tmp_path / 'aborted'}", "aggregation.secure=ckks",
                               "server.rounds=3", "server.clients_per_round=2",
                               "server.min_clients=3", "run.time_budget_seconds=0.001"]
        status = deployment.run(APP, run_config(aborted))
        assert status["status"] == "finished:completed", deployment.logs(status["run-id"])
        (metrics,) = logged_metrics(tmp_path / "aborted")
        assert metrics["clients"] == 2 and "fewer than server.min_clients" in metrics["aborted"]
        assert all(torch.equal(v, init[k])
                   for k, v in final_params(tmp_path / "aborted", 1).items())


def test_secagg_plus_over_tls_with_authenticated_nodes_and_a_dropout(tmp_path, client_files):
    """TLS with certificates made here; only registered SuperNodes may join; SecAgg+ gives the
    exact weighted mean of the clients that finished, one having died mid-protocol."""
    files, held_out, validation = client_files
    with Deployment(tmp_path / "deployment", tls=True, node_auth=True) as deployment:
        deployment.start_superlink()
        keys = [make_node_key(tmp_path / "keys", f"node{i}") for i in range(4)]
        for private, public in keys[:3]:
            registered = deployment.flwr("supernode", "register", str(public), "test")
            assert registered.returncode == 0, registered.stdout + registered.stderr
        nodes = [deployment.start_supernode(f"node{i}", f'data-path="{path}"', keys[i][0])
                 for i, path in enumerate(files)]
        stranger = deployment.start_supernode("stranger", f'data-path="{files[0]}"',
                                              keys[3][0], ("--max-retries", "0"))
        for node in nodes:
            assert node.wait_for("SuperNode ID:", 90), node.text()[-2000:]
        assert stranger.popen.wait(timeout=90) != 0
        assert "Failed to activate SuperNode" in stranger.text()
        # user-level DP: the first round spends epsilon 4.73, two 7.08 (RDP, 3 of 3 clients,
        # sigma 1), so a target of 6 stops the run after round 1; the norm bound (0.02)
        # binds the clients' updates (norm 0.044), and clips them on the nodes
        secure = OVERRIDES + [f"run.out_dir={tmp_path / 'secagg'}", "server.rounds=3",
                              "aggregation.secure=secagg+", "server.min_clients=3",
                              "flower.round_timeout=30.0", "privacy.noise_multiplier=1.0",
                              "privacy.clip_norm=0.05", "privacy.accountant=rdp",
                              "privacy.target_epsilon=6.0", "aggregation.norm_bound=0.02"]
        received = "Receiving: train message"  # SecAgg+ stages: setup, keys, masked vector
        before = nodes[2].text().count(received)
        run_id = deployment.submit(APP, run_config(secure))
        assert nodes[2].wait_for(received, 300, count=before + 3)
        nodes[2].stop(signal.SIGKILL)  # dies before sending its masked update
        status = deployment.wait(run_id)
        assert status["status"] == "finished:completed", deployment.logs(run_id)
    # round 1: two clients reported, fewer than server.min_clients, and a DP round is
    # released all the same, as the simulation releases it without the dead client
    simulated = simulation(files, validation, held_out, secure)
    simulated.experiment.faults = Absent({2: "killed"})
    expected, (want_metrics,) = simulated_run(simulated)
    (got_metrics,) = logged_metrics(tmp_path / "secagg")
    for key in ("clients", "epsilon", "bytes_down", "bytes_up"):
        assert got_metrics[key] == want_metrics[key], key
    assert "aborted" not in got_metrics and got_metrics["clients"] == 2
    assert got_metrics["loss"] == pytest.approx(want_metrics["loss"], rel=1e-5)
    got = final_params(tmp_path / "secagg", 1)
    for key in expected:  # within SecAgg+'s fixed-point rounding (16 / 2^22 per level)
        torch.testing.assert_close(got[key], expected[key], rtol=0, atol=2e-5)


@pytest.mark.slow
def test_rating_clients_on_supernodes_match_the_simulation(tmp_path):
    """Phones' users (MovieLens' format, synthetic ratings) as SuperNodes reading their own
    files: FedMeta-MAML of a MeLU-shaped model, and FCF (FedRep of a matrix factorization,
    each node keeping its user's vector), end as the simulation of the same files; the
    held-out nodes score themselves as new users (MAE, RMSE, NDCG@10), the server averages."""
    config = tmp_path / "export.toml"
    ratings_file = write_ratings(tmp_path / "ratings.npz", users=30)
    config.write_text(f"[model]\nname = 'melu'\n[data]\ndataset = 'movielens'\n"
                      f"validation_fraction = 0.2\npath = '{ratings_file}'\n")
    assert cli(["export-clients", str(config), str(tmp_path / "clients"), "--clients", "4",
                "--validation", "1", "--held-out", "2"]) == 0
    files, validation, held_out = (sorted((tmp_path / "clients").glob(f"{prefix}_*.npz"))
                                   for prefix in ("client", "validation", "heldout"))
    ratings = ["data.dataset=movielens", f"data.path={ratings_file}", "model.embedding=8", "task.shots=5", "task.queries=5",
               "eval.shots=5", "eval.every=2", "learner.optimizer=sgd", "learner.lr=0.05"]
    runs = {"maml": ["model.name=melu", "learner.algorithm=maml", "learner.inner_lr=0.05",
                     "learner.eval_inner_steps=2"],
            "fcf": ["model.name=mf", "learner.algorithm=fedrep", "learner.head_steps=2",
                    "learner.batch_size=8", "learner.personal_l2=0.1"]}
    with Deployment(tmp_path / "deployment") as deployment:
        deployment.start_superlink()
        start_nodes(deployment, files, held_out, None, validation)
        for name, overrides in runs.items():
            overrides = OVERRIDES + ratings + overrides + [f"run.out_dir={tmp_path / name}"]
            status = deployment.run(APP, run_config(overrides))
            assert status["status"] == "finished:completed", deployment.logs(status["run-id"])
            simulated = simulation(files, validation, held_out, overrides)
            expected, want = simulated_run(simulated)
            got = final_params(tmp_path / name, 2)
            assert got.keys() == expected.keys()
            for key in expected:
                torch.testing.assert_close(got[key], expected[key], rtol=1e-4, atol=1e-6)
            got_rounds = logged_metrics(tmp_path / name)
            assert got_rounds[1]["val_mae"] == pytest.approx(want[1]["val_mae"], rel=1e-4)
            (run,) = (tmp_path / name).iterdir()
            meta_test = json.loads((run / "summary.json").read_text())["meta_test"]
            assert meta_test["clients"] == 2 and meta_test["mae"] > 0


def processes_naming(text: str) -> list[int]:
    """PIDs of the processes whose command line holds `text`."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and text in (entry / "cmdline").read_text():
                pids.append(int(entry.name))
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return pids


def test_the_readmes_simulation_recipe_runs_flwr_run_local(tmp_path):
    """`flwr run . local`, as the README has it: flwr starts a local SuperLink with the
    simulation runtime, one SuperNode per client of the config (here 3 training, 1
    meta-validation, 4 meta-test); with Flower's default of 2 SuperNodes the run says how
    many it needs. flwr leaves its local SuperLink running: stopped here by its PID."""
    home = tmp_path / "flwr-home"
    home.mkdir()
    (home / "config.toml").write_text('[superlink.local]\naddress = ":local:"\n')
    env = {**os.environ, **ENV, "FLWR_HOME": str(home),
           "PATH": f"{BIN}:{os.environ.get('PATH', '')}"}
    small = OVERRIDES + [f"run.out_dir={tmp_path / 'runs'}", "data.partition=random",
                         "data.num_clients=4"]

    def flwr_run(*federation: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(BIN / "flwr"), "run", ".", "local", "--stream",
                               "--run-config", run_config(small), *federation],
                              cwd=APP, env=env, capture_output=True, text=True, timeout=300)
    try:
        too_few = flwr_run()
        assert ("Flower's simulation runs 2 SuperNodes and this config has 8 clients"
                in too_few.stdout + too_few.stderr), too_few.stdout[-3000:]
        assert not (tmp_path / "runs").exists()
        done = flwr_run("--federation-config", "num-supernodes=8")
        (run,) = (tmp_path / "runs").iterdir()
        summary = json.loads((run / "summary.json").read_text())
        assert summary["test_clients"] == 4 and summary["validation_clients"] == 1, done.stdout
        assert summary["meta_test"]["episodes"] == 4 * 4  # eval_episodes_per_client each
    finally:
        for pid in processes_naming(str(home)):
            os.kill(pid, signal.SIGTERM)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["scaffold", "roles"])
def test_scaffold_and_speaking_roles_on_supernodes_match_the_simulation(tmp_path, kind):
    """SuperNodes reading their exported files end as the simulation of the same files:
    SCAFFOLD's nodes (each holding its control variate until the server says it used the
    reply) over Synthetic clients, and FedMeta-MAML's over speaking roles (LEAF's text,
    each node a role's file), the held-out roles scoring their own next characters."""
    config = tmp_path / "export.toml"
    if kind == "scaffold":
        config.write_text("[data]\ndataset = 'synthetic'\nnum_clients = 6\n")
        overrides = ["data.dataset=synthetic", "data.num_clients=6", "model.name=mlp",
                     "data.path=unread",  # Synthetic clients are generated
                     "learner.algorithm=scaffold", "learner.optimizer=sgd", "learner.lr=0.05",
                     "learner.batch_size=8", "server.rounds=3"]
        export = ["--clients", "4", "--validation", "1", "--held-out", "1"]
    else:
        np.savez(tmp_path / "shakespeare.npz", **shakespeare_arrays())
        config.write_text(f"[data]\ndataset = 'shakespeare'\npath = '{tmp_path}/shakespeare.npz'"
                          "\ntest_fraction = 0.34\nvalidation_fraction = 0.25\n"
                          "[model]\nname = 'char-lstm'\n")
        overrides = ["data.dataset=shakespeare", f"data.path={tmp_path}/shakespeare.npz",
                     "data.test_fraction=0.34", "data.validation_fraction=0.25",
                     "model.name=char-lstm", "learner.algorithm=maml", "task.shots=4",
                     "task.queries=4", "eval.shots=4", "eval.queries=4",
                     "server.clients_per_round=2"]
        export = ["--validation", "1", "--held-out", "2"]
    assert cli(["export-clients", str(config), str(tmp_path / "clients"), *export]) == 0
    files, validation, held_out = (sorted((tmp_path / "clients").glob(f"{prefix}_*.npz"))
                                   for prefix in ("client", "validation", "heldout"))
    overrides = OVERRIDES + overrides + [f"run.out_dir={tmp_path / 'run'}"]
    with Deployment(tmp_path / "deployment") as deployment:
        deployment.start_superlink()
        start_nodes(deployment, files, held_out, None, validation)
        status = deployment.run(APP, run_config(overrides))
        assert status["status"] == "finished:completed", deployment.logs(status["run-id"])
    expected, _ = simulated_run(simulation(files, validation, held_out, overrides))
    rounds = validate(app_config(overrides)).server.rounds
    got = final_params(tmp_path / "run", rounds)
    assert got.keys() == expected.keys()
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=1e-4, atol=1e-6)
    if kind == "roles":
        (run,) = (tmp_path / "run").iterdir()
        summary = json.loads((run / "summary.json").read_text())
        assert summary["meta_test"]["clients"] == len(held_out)
