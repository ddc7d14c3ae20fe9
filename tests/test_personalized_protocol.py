"""PFLlib's personalized-FL protocol: each training client's own examples split into what it
trains on, its validation part and its test part; each scored with what it learned (its
personal state, kept across rounds and through a resume); training reads the validation
parts only."""

import json
import shutil
from collections import OrderedDict

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, RecordDict
from hypothesis import given, strategies as st
from safetensors.torch import load_file

from fedmeta.build import build_experiment
from fedmeta.cli import main
from fedmeta.config import load_config
from fedmeta.data import ArrayFederatedDataset, ClientData, own_splits
from fedmeta.data.client_files import load_client, save_own_splits
from fedmeta.data.fashion_mnist import DEBIAN
from fedmeta.engine.rundir import RunDirectory
from fedmeta.engine.simulation import Simulation
from fedmeta.engine.training import train_and_summarize
from fedmeta.errors import UserError
from fedmeta.engine.client_state import CLIENTS
from fedmeta.evaluation import own_split_test
from fedmeta.flower import node
from fedmeta.flower.messages import config_message
from fedmeta.flower.server_app import FlowerFederation
from fedmeta.learners.fedavg import FedAvg
from fedmeta.learners.protonet import ProtoNet
from in_process_flower import in_process_federation
from test_resume import assert_same_run, metrics
from test_validation import Spy
from tiny import feature_client, mlp_learner

installed = pytest.mark.skipif(not (DEBIAN / "t10k-labels-idx1-ubyte.gz").is_file(),
                               reason="Debian's dataset-fashion-mnist is not installed")
SMALL = ["data.dataset='fashion-mnist'", "model.name='mlp'", "model.hidden=16",
         "learner.optimizer='sgd'", "learner.lr=0.05", "learner.local_steps=2",
         "learner.batch_size=16", "server.clients_per_round=5", "server.rounds=4",
         "eval.every=1", "eval.shots=5", "run.checkpoint_every=1"]


@given(st.lists(st.integers(1, 40), min_size=1, max_size=6), st.floats(0, 0.9),
       st.integers(0, 2**32 - 1))
def test_own_splits_part_each_client_s_examples(sizes, fraction, seed):
    n = sum(sizes)
    starts = np.cumsum([0, *sizes])
    clients = [np.arange(a, b) for a, b in zip(starts[:-1], starts[1:])]
    query = np.random.default_rng(seed).random(n) < 0.25
    dataset = ArrayFederatedDataset("toy", np.zeros((n, 2), np.float32), np.zeros(n, np.int64),
                                    clients, query)
    train, validation, test = own_splits(dataset, fraction, seed)
    for i, own in enumerate(clients):
        parts = [d.client_indices(i) for d in (train, validation, test)]
        assert sorted(np.concatenate(parts).tolist()) == own.tolist()
        assert set(parts[2].tolist()) == set(own[query[own]].tolist())
        assert len(parts[1]) == round(fraction * (~query[own]).sum())


def test_a_global_head_scores_each_held_out_example_as_it_predicts_it():
    learner = mlp_learner(FedAvg, hidden=(6,), ways=4, dtype=torch.float32)
    params, client = learner.init_params(), feature_client()
    held = ClientData(client.x[::3], client.y[::3])
    correct = learner.personal_correct(params, {}, client, held, 5, torch.Generator())
    with torch.no_grad():
        expected = learner.forward(params, held.x).argmax(-1) == held.y
    assert torch.equal(correct, expected)


def test_a_client_scores_its_own_split_the_same_whoever_else_is_scored():
    """Each client draws the examples it adapts to from a stream of its own: leaving client 0
    out (no held-out examples) changes no other client's score, as a deployment's node scores
    alone."""
    learner = mlp_learner(ProtoNet, hidden=(5,), ways=None, dtype=torch.float32)
    clients = [feature_client(per_class=12, seed=s) for s in range(4)]
    x = torch.cat([c.x for c in clients]).numpy()
    y = torch.cat([c.y for c in clients]).numpy()
    train = ArrayFederatedDataset("toy", x, y, [np.arange(48 * i, 48 * i + 40) for i in range(4)])
    held = [np.arange(48 * i + 40, 48 * i + 48) for i in range(4)]
    every = own_split_test(learner, learner.init_params(), None, train,
                           ArrayFederatedDataset("toy", x, y, held), 3, (5,))[0]
    others = own_split_test(learner, learner.init_params(), None, train,
                            ArrayFederatedDataset("toy", x, y, [held[0][:0], *held[1:]]), 3,
                            (5,))[0]
    assert others.per_client_accuracy == every.per_client_accuracy[1:]
    assert len(set(every.per_client_accuracy)) > 1  # the clients' scores do differ


@pytest.mark.parametrize("settings,message", [
    (["learner.algorithm='local'"], "nothing to deploy"),
    (["eval.pooled=true"], "which a deployment's nodes keep apart")])
def test_flower_refuses_what_a_deployment_cannot_do(settings, message):
    with pytest.raises(UserError, match=message):
        FlowerFederation(None, load_config(None, settings))


@pytest.mark.parametrize("algorithm", ["ditto", "fedper", "fedrep", "fedbn"])
def test_a_flower_node_keeps_its_client_s_state_as_the_simulation_keeps_it(algorithm):
    """Three rounds of six Synthetic clients, half of them a round: each node's reply to the
    train message (in Flower's simulation mode: client `partition-id`) equals the update the
    simulation computes for that client from the state it keeps for it."""
    config = load_config(None, ["data.dataset='synthetic'", "data.num_clients=6",
                                "model.name='mlp'", "model.hidden=8", "model.batch_norm=true",
                                "learner.optimizer='sgd'", "learner.lr=0.05",
                                "learner.local_steps=2", "learner.batch_size=8",
                                "server.clients_per_round=3", "eval.every=0",
                                f"learner.algorithm='{algorithm}'"])
    experiment = build_experiment(config)
    simulation = Simulation(experiment)
    params = experiment.learner.init_params()
    state = experiment.initial_state(params)
    for round_index in (1, 2, 3):
        expected = simulation.gather(round_index, params, state[CLIENTS]).rows
        content = RecordDict({"arrays": ArrayRecord(params), "config": ConfigRecord(
            config_message(config, round=round_index,
                           **{"num-classes": experiment.train.num_classes,
                              "num-items": experiment.train.num_items}))})
        for row, client in enumerate(expected.clients.tolist()):
            reply = node.train(content, {"partition-id": client})
            delta = reply["arrays"].to_torch_state_dict()
            for k, v in expected.deltas.items():
                torch.testing.assert_close(delta[k], v[row], rtol=0, atol=1e-6)
        params, state, _ = simulation.round(round_index, params, state)


def train_message(config, experiment, params, round_index, **values) -> RecordDict:
    return RecordDict({"arrays": ArrayRecord(params), "config": ConfigRecord(config_message(
        config, round=round_index, **{"num-classes": experiment.train.num_classes,
                                      "num-items": experiment.train.num_items}, **values))})


def test_a_scaffold_node_makes_a_control_variate_its_own_once_the_server_used_its_reply(
        monkeypatch):
    """Three rounds of six Synthetic clients, half a round: told the round its last reply was
    used in (`released-round`), each node's update equals the simulation's from the control
    variate c_i the simulation keeps; told otherwise, a node goes on from the c_i it had,
    as the simulation does when a round is not released."""
    monkeypatch.setattr(node, "PERSONAL", OrderedDict())
    config = load_config(None, ["data.dataset='synthetic'", "data.num_clients=6",
                                "model.name='mlp'", "model.hidden=8", "learner.optimizer='sgd'",
                                "learner.lr=0.05", "learner.local_steps=2",
                                "learner.batch_size=8", "server.clients_per_round=3",
                                "eval.every=0", "learner.algorithm='scaffold'"])
    experiment = build_experiment(config)
    simulation = Simulation(experiment)
    params = experiment.learner.init_params()
    state = experiment.initial_state(params)
    released = {}

    def replies(round_index, params, rows, released):
        for row, client in enumerate(rows.clients.tolist()):
            reply = node.train(train_message(config, experiment, params, round_index, **{
                "released-round": released.get(client, -1)}), {"partition-id": client})
            delta = reply["arrays"].to_torch_state_dict()
            for k, v in rows.deltas.items():
                torch.testing.assert_close(delta[k], v[row], rtol=0, atol=1e-6)
    for round_index in (1, 2, 3):
        rows = simulation.gather(round_index, params, state[CLIENTS]).rows
        replies(round_index, params, rows, released)
        before, (params, state, _) = state, simulation.round(round_index, params, state)
        released.update(dict.fromkeys(rows.clients.tolist(), round_index))
    # round 3 not released after all: its clients' next rounds go on from what they had before
    rows = simulation.gather(4, params, before[CLIENTS]).rows
    assert set(rows.clients.tolist()) & {c for c, r in released.items() if r == 3}
    replies(4, params, rows, {c: r for c, r in released.items() if r < 3})


def test_scaffold_deployed_on_client_files_ends_as_the_simulation(tmp_path, monkeypatch):
    """The ServerApp's federation (nodes in-process, each holding its exported client file)
    tells each node which of its replies it used, and ends with the simulation's model and
    control variate."""
    monkeypatch.setattr(node, "PERSONAL", OrderedDict())
    (tmp_path / "c.toml").write_text("[data]\ndataset = 'synthetic'\nnum_clients = 8\n")
    assert main(["export-clients", str(tmp_path / "c.toml"), str(tmp_path / "files")]) == 0
    config = load_config(tmp_path / "c.toml", [
        "model.name='mlp'", "model.hidden=8", "learner.optimizer='sgd'", "learner.lr=0.05",
        "learner.local_steps=2", "learner.batch_size=8", "server.clients_per_round=3",
        "server.rounds=4", "eval.every=0", "learner.algorithm='scaffold'"])
    simulated = Simulation(build_experiment(config)).run()
    federation = in_process_federation(config, [
        {"data-path": str(path)} for path in sorted((tmp_path / "files").glob("*.npz"))],
        monkeypatch)
    deployed = federation.run()
    for key, value in simulated.items():
        torch.testing.assert_close(deployed[key], value, rtol=1e-5, atol=1e-7)
    assert any(k.startswith("control.") and v.abs().sum() > 0 for k, v in deployed.items())
    assert set(federation.released.values()) <= {1, 2, 3, 4} and 4 in federation.released.values()


@pytest.mark.parametrize("settings,message", [
    (["model.name='mlp'", "model.batch_norm=true", "learner.algorithm='fedavg'",
      "privacy.sample_clip_norm=1.0"], "batch_norm")])
def test_what_the_protocol_or_the_model_cannot_do_is_one_line(settings, message):
    with pytest.raises(UserError, match=message):
        build_experiment(load_config(None, settings))


@pytest.fixture(scope="module")
def own_split_files(tmp_path_factory) -> list[dict]:
    """Node configs of SMALL's clients, each with its file from `export-clients`."""
    folder = tmp_path_factory.mktemp("own-splits")
    (folder / "config.toml").write_text("")
    assert main(["export-clients", str(folder / "config.toml"), str(folder / "files"),
                 *[a for s in SMALL for a in ("--set", s)]]) == 0
    return [{"data-path": str(path)} for path in sorted((folder / "files").glob("*.npz"))]


@installed
@pytest.mark.parametrize("algorithm,nodes", [("fedrep", "files"), ("fedavg-ft", "partitions")])
def test_own_splits_on_nodes_score_as_the_simulation(tmp_path, monkeypatch, own_split_files,
                                                     algorithm, nodes):
    """Each node holds its client's training, validation and test parts (a deployment's file
    from `export-clients`, or a partition of Flower's simulation) and scores its own parts
    with the personal state it kept, the meta-test with the state of the round model
    selection chose (FedRep's: not the last): the federation logs, selects and meta-tests as
    the simulation does. A node that no longer holds that state says so."""
    monkeypatch.setattr(node, "PERSONAL", OrderedDict())
    # FedRep's 5 head steps make a round before the last the best one
    unsteady = ["learner.head_steps=5"] if algorithm == "fedrep" else []
    config = load_config(None, SMALL + [f"learner.algorithm='{algorithm}'", "learner.lr=10.0",
                                        "server.rounds=5", *unsteady])
    simulated = train_and_summarize(Simulation(build_experiment(config)),
                                    RunDirectory.create(config, tmp_path / "simulated"), False)
    federation = in_process_federation(
        config, 20 if nodes == "partitions" else own_split_files, monkeypatch)
    deployed = train_and_summarize(federation, RunDirectory.create(config, tmp_path / "nodes"),
                                   False)
    if algorithm == "fedrep":
        assert 1 < deployed["selected"]["round"] < deployed["rounds"] == 5  # a state kept back
        lost = federation.content(federation.experiment.learner.init_params(), on="test",
                                  round=3, **{"selected-round": 3})  # not kept: 4 was chosen
        assert node.evaluate(lost, own_split_files[0])["metrics"]["lost-state"] == 1
    assert deployed["selected"] == pytest.approx(simulated["selected"])
    per_client = [run["meta_test"].pop("per_client_accuracy") for run in (deployed, simulated)]
    assert deployed["meta_test"] == pytest.approx(simulated["meta_test"])
    assert per_client[0] == pytest.approx(per_client[1])
    logged = [[{k: v for k, v in m.items() if k.startswith("val_")} for m in metrics(run)]
              for run in (tmp_path / "simulated", tmp_path / "nodes")]
    assert len(logged[0]) == len(logged[1]) == 5 and "val_pooled_accuracy" in logged[0][0]
    for simulated_round, deployed_round in zip(*logged):
        assert deployed_round == pytest.approx(simulated_round)


@installed
@pytest.mark.parametrize("change,message", [
    (lambda nodes, settings: ([{**nodes[0], "held-out": True}, *nodes[1:]], settings),
     "are held out or hold none"),
    (lambda nodes, settings: (nodes, [*settings, "data.dataset='synthetic'",
                                      "data.num_clients=20"]),
     "hold files of own splits"),
    (lambda nodes, settings: (nodes, [*settings, "learner.algorithm='maml'", "task.ways=2",
                                      "eval.ways=2"]),
     "more than the 2-way head")])
def test_a_federation_of_own_splits_refuses_what_it_cannot_score(monkeypatch, own_split_files,
                                                                  change, message):
    nodes, settings = change(own_split_files, SMALL)
    with pytest.raises(UserError, match=message):
        in_process_federation(load_config(None, settings), nodes, monkeypatch)


def test_a_client_file_of_own_splits_holds_its_parts(tmp_path):
    parts = tuple(ClientData(torch.full((n, 2, 2), n, dtype=torch.uint8),
                             torch.arange(n) % 3) for n in (5, 2, 3))
    save_own_splits(tmp_path / "c.npz", parts, 7)
    file = load_client(tmp_path / "c.npz")
    assert file.client_id == 7 and file.num_classes == 3
    for got, want in zip((file.data, *file.held), parts):
        assert torch.equal(got.x, want.x) and torch.equal(got.y, want.y)
    arrays = dict(np.load(tmp_path / "c.npz"))
    np.savez(tmp_path / "bad.npz", **{**arrays, "split": arrays["split"] + 1})
    with pytest.raises(UserError, match="split must be 10 uint8 values in 0..2"):
        load_client(tmp_path / "bad.npz")
    np.savez(tmp_path / "bad.npz", **{**arrays, "split": np.ones(10, np.uint8)})
    with pytest.raises(UserError, match="no example to train on"):
        load_client(tmp_path / "bad.npz")
    np.savez(tmp_path / "bad.npz", **arrays, query_mask=np.ones(10, bool))
    with pytest.raises(UserError, match="holds no ratings .num_items. or query_mask"):
        load_client(tmp_path / "bad.npz")


@installed
def test_a_head_smaller_than_a_client_s_classes_is_refused_before_training():
    config = load_config(None, SMALL + ["learner.algorithm='maml'", "task.ways=2",
                                        "eval.ways=2"])
    with pytest.raises(UserError, match="classes, more than the 2-way head"):
        Simulation(build_experiment(config)).check_data()


@installed
def test_training_reads_only_the_validation_parts_and_the_test_parts_once(tmp_path):
    config = load_config(None, SMALL + ["learner.algorithm='fedper'"])
    experiment = build_experiment(config)
    experiment.validation, experiment.test = Spy(experiment.validation), Spy(experiment.test)
    logged = []
    Simulation(experiment).run([lambda r, p, s, metrics: logged.append(metrics)])
    assert experiment.test.reads == [] and experiment.validation.reads
    assert all("val_accuracy" in m and "val_pooled_accuracy" in m for m in logged)
    assert not any(k.startswith("test_") for m in logged for k in m)


@installed
@pytest.mark.parametrize("algorithm", ["fedrep", "scaffold"])
def test_personal_states_are_checkpointed_and_a_resumed_run_ends_as_if_never_stopped(
        tmp_path, algorithm):
    """Run 4 rounds; cut a copy back to its round-2 checkpoint and resume it: the same metrics,
    summary and final checkpoint, personal states (one row per client) included."""
    settings = SMALL + [f"learner.algorithm='{algorithm}'", "server.optimizer='sgd'"]
    config = tmp_path / "config.toml"
    config.write_text("")
    whole = tmp_path / "whole"
    args = [a for s in settings for a in ("--set", s)]
    assert main(["run", str(config), *args, "--out", str(whole), "--quiet"]) == 0
    final = load_file(str(whole / "checkpoints" / "round_00004.safetensors"))
    states = {k: v for k, v in final.items() if k.startswith("server/clients/")}
    assert states and all(v.shape[0] == 20 for v in states.values())
    summary = json.loads((whole / "summary.json").read_text())
    assert summary["meta_test"]["clients"] == 20 and "pooled_accuracy" in summary["meta_test"]

    resumed = tmp_path / "resumed"
    shutil.copytree(whole, resumed)
    (resumed / "summary.json").unlink()
    for later in (3, 4):
        (resumed / "checkpoints" / f"round_{later:05d}.safetensors").unlink()
    assert main(["run", "--resume", str(resumed), "--quiet"]) == 0
    assert_same_run(resumed, whole)
