"""Tasks with the dataset's own labels (`task.labels = "global"`, fedmeta.data.own_tasks):
Per-FedAvg's minibatches on label-skewed clients, LEAF's per-user split of new clients."""

import numpy as np
import pytest
import torch
from hypothesis import given, strategies as st

from fedmeta.build import build_experiment
from fedmeta.cli import main
from fedmeta.config import load_config, validate
from fedmeta.data import ClientData, NotEnoughData, OwnExamplesSampler
from fedmeta.engine.simulation import Simulation
from fedmeta.errors import UserError
from fedmeta.learners.maml import MAML
from in_process_flower import in_process_federation
from test_data_shakespeare import arrays as shakespeare_arrays, text_config
from test_personalized_protocol import SMALL, installed
from tiny import DIM, feature_client, mlp_learner

SYNTHETIC = ["data.dataset='synthetic'", "data.num_clients=40", "model.name='mlp'",
             "model.hidden=8", "task.labels='global'", "task.shots=3", "task.queries=3",
             "eval.shots=3", "eval.queries=3", "eval.final_episodes=50"]


@given(size=st.integers(2, 30), shots=st.integers(1, 10), queries=st.integers(1, 10),
       seed=st.integers(0, 2**16))
def test_a_task_of_a_client_without_a_split_is_distinct_examples(size, shots, queries, seed):
    client = ClientData(torch.arange(size, dtype=torch.float32)[:, None].expand(size, DIM),
                        torch.arange(size) % 3)
    sampler = OwnExamplesSampler(shots, queries)
    assert sampler.eligible(client) == (size >= shots + queries)
    if not sampler.eligible(client):
        with pytest.raises(NotEnoughData, match="too few for tasks of"):
            sampler.sample(client, 2, torch.Generator())
        return
    tasks = sampler.sample(client, 4, torch.Generator().manual_seed(seed))
    for e in range(4):
        rows = torch.cat([tasks.support_x[e, :, 0], tasks.query_x[e, :, 0]]).long()
        assert len(rows.unique()) == shots + queries  # no example twice, support or query
        assert torch.equal(torch.cat([tasks.support_y[e], tasks.query_y[e]]), rows % 3)


def test_a_meta_learned_global_head_scores_own_examples_by_the_dataset_s_labels():
    """With the dataset's labels, a client's held-out examples are scored by the argmax over
    every class (not relabelled to its own, nor cut to its count): with a vanishing inner
    rate, exactly the global model's prediction."""
    learner = mlp_learner(MAML, hidden=(6,), ways=7, dtype=torch.float32, inner_lr=1e-12)
    learner.sampler = OwnExamplesSampler(2, 2)
    params, client = learner.init_params(), feature_client(classes=4)
    held = ClientData(client.x[1::3], client.y[1::3] + 3)  # labels 3..6 of the 7
    with torch.no_grad():
        params["head.bias"][5] = 10.0  # the global model predicts class 5 for everything
        predicted = learner.forward(params, held.x).argmax(-1)
    correct = learner.personal_correct(params, {}, client, held, 5, torch.Generator())
    assert torch.equal(correct, predicted == held.y) and correct.any()


def test_every_new_synthetic_client_is_evaluated_with_the_dataset_s_labels():
    """Half of LEAF Synthetic's clients hold one class: no N-way episode can evaluate them,
    a task of their own examples can."""
    episodes = build_experiment(load_config(None, SYNTHETIC[:3] + ["learner.algorithm='maml'",
                                                                   "eval.ways=2",
                                                                   "task.ways=2"]))
    own = build_experiment(load_config(None, SYNTHETIC + ["learner.algorithm='maml'"]))
    assert own.learner.model.head.out_features == 10  # the dataset's classes
    counts = [Simulation(experiment).evaluate(experiment.learner.init_params(), 50)
              for experiment in (episodes, own)]
    assert counts[1]["test_eligible_clients"] == counts[1]["test_held_out_clients"] == 100
    assert counts[0]["test_eligible_clients"] < 75


@pytest.mark.parametrize("settings, message", [
    (["task.labels='global'"], "task.labels = 'global' needs held-out clients with the"),
    (SYNTHETIC + ["learner.algorithm='protonet'"], "protonet does not learn tasks with the "
                                                   "dataset's labels"),
    (SYNTHETIC + ["learner.algorithm='maml'", "eval.personalization_episodes=5"],
     "own examples are its tasks already")])
def test_what_global_labels_cannot_do_is_a_config_error(settings, message):
    with pytest.raises(UserError, match=message):
        build_experiment(load_config(None, settings))


@installed
def test_per_fedavg_trains_a_global_head_on_label_skewed_clients():
    """Per-FedAvg as PFLlib runs it (a 10-class head, two minibatches of a client's own
    examples a step): each client's test split, scored after one inner step on its own
    training examples, is predicted far better than by the untrained model."""
    config = load_config(None, SMALL + ["learner.algorithm='perfedavg-fo'", "server.rounds=10",
                                        "learner.local_steps=5", "task.labels='global'",
                                        "task.shots=8", "task.queries=8",
                                        "learner.inner_lr=0.05"])
    experiment = build_experiment(config)
    simulation = Simulation(experiment)
    untrained = simulation.evaluate(experiment.learner.init_params(), 1)["test_accuracy"]
    trained = simulation.evaluate(simulation.run(), 1)
    assert trained["test_clients"] == 20 and trained["test_accuracy"] > untrained + 0.2


def test_clients_too_small_for_a_task_are_skipped_and_label_flips_keep_the_labels():
    """A Synthetic client with fewer than shots + queries examples is skipped like any client
    without data for its task (never a failure), and a label-flipping client flips the
    dataset's labels (no episode to flip)."""
    experiment = build_experiment(load_config(None, SYNTHETIC + [
        "learner.algorithm='fomaml'", "task.shots=10", "task.queries=10",
        "server.clients_per_round=20", "server.rounds=2", "eval.every=0",
        "attack.kind='label-flip'", "attack.fraction=0.5"]))
    sizes = [len(experiment.train.client(i)) for i in range(experiment.train.num_clients)]
    assert min(sizes) < 20 <= max(sizes)
    logged = []
    Simulation(experiment).run([lambda r, p, s, metrics: logged.append(metrics)])
    assert [m["failed"] for m in logged] == [0, 0] and sum(m["skipped"] for m in logged)
    client = experiment.train.client(0)
    _, flipped = experiment.attack.poison(experiment.learner, client, 10)
    assert torch.equal(flipped.y, 9 - client.y)


def role_files(raw: dict, experiment, tmp_path) -> list[dict]:
    """The roles of `experiment`, of the config `raw`, exported by `fedmeta export-clients`,
    as deployed nodes' configs."""
    toml = tmp_path / "c.toml"
    toml.write_text("".join(f"[{section}]\n" + "".join(f"{key} = {value!r}\n"
                                                       for key, value in raw[section].items())
                            for section in ("data", "model")))
    assert main(["export-clients", str(toml), str(tmp_path / "roles"), "--validation",
                 str(experiment.validation.num_clients), "--held-out",
                 str(experiment.test.num_clients)]) == 0
    flags = {"client": {}, "validation": {"validation": True}, "heldout": {"held-out": True}}
    return [{"data-path": str(path), **flags[path.name.split("_")[0]]}
            for prefix in flags for path in sorted((tmp_path / "roles").glob(f"{prefix}_*"))]


@pytest.mark.parametrize("dataset", ["synthetic", "shakespeare", "shakespeare-files"])
def test_tasks_with_the_dataset_s_labels_run_on_flower_s_nodes_as_simulated(
        dataset, tmp_path, monkeypatch):
    """Nodes in Flower's simulation mode (in-process), each a client of the config, or
    deployed nodes each holding its role's file (`export-clients`): the same global head (the
    dataset's label space, LEAF's 80 characters for text), the same rounds as the simulation;
    every held-out node scores tasks of its own examples."""
    if dataset == "synthetic":
        config = load_config(None, SYNTHETIC + ["learner.algorithm='perfedavg-fo'",
                                                "server.rounds=2", "server.clients_per_round=4",
                                                "eval.every=0"])
    else:
        np.savez(tmp_path / "shakespeare.npz", **shakespeare_arrays())
        raw = text_config(tmp_path / "shakespeare.npz", "maml")
        config = validate(raw)
    experiment = build_experiment(config)
    simulated = Simulation(experiment).run()
    nodes = sum(d.num_clients for d in (experiment.train, experiment.validation,
                                        experiment.test))
    if dataset == "shakespeare-files":
        nodes = role_files(raw, experiment, tmp_path)
    federation = in_process_federation(config, nodes, monkeypatch)
    deployed = federation.run()
    for key, value in simulated.items():
        torch.testing.assert_close(deployed[key], value, rtol=1e-5, atol=1e-7)
    result = federation.evaluate(deployed, 0)
    assert result["test_clients"] == experiment.test.num_clients
