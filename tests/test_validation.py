"""Meta-validation clients: disjoint from the training and meta-test clients; everything read
during training (evaluations, early stopping, the model kept) reads them, and the meta-test
clients are read once, after training."""

import json

import numpy as np
import pytest
import torch
from hypothesis import given, strategies as st

from fedmeta.build import build_datasets, build_experiment
from fedmeta.cli import demo_config_path
from fedmeta.config import load_config
from fedmeta.data import (ArrayFederatedDataset, ClientData, EpisodeSampler, FederatedDataset,
                          hold_out_validation)
from fedmeta.engine.checkpoint import load_checkpoint
from fedmeta.engine.rundir import RunDirectory
from fedmeta.engine.simulation import Simulation
from fedmeta.engine.training import train_and_summarize
from fedmeta.errors import UserError
from fedmeta.evaluation import eligible_clients, meta_test
from fedmeta.learners.protonet import ProtoNet
from tiny import mlp_learner

TINY = ["model.hidden=8", "server.clients_per_round=2", "learner.local_steps=1",
        "eval.episodes=10", "eval.final_episodes=20"]


def toy(num_clients):
    x = np.zeros((num_clients, 2), np.float32)
    return ArrayFederatedDataset("toy", x, np.arange(num_clients), np.arange(num_clients)[:, None])


@given(st.integers(1, 200), st.floats(0, 0.99), st.integers(0, 2**32 - 1))
def test_held_out_clients_are_disjoint_and_cover_the_training_side(clients, fraction, seed):
    try:
        train, validation = hold_out_validation(toy(clients), fraction, seed)
    except ValueError:
        assert np.ceil(fraction * clients - 1e-9) >= clients
        return
    names = [{int(d.client(i).y[0]) for i in range(d.num_clients)} for d in (train, validation)]
    assert not names[0] & names[1] and names[0] | names[1] == set(range(clients))
    assert validation.num_clients == (0 if fraction == 0 else np.ceil(fraction * clients - 1e-9))
    assert train.num_classes == validation.num_classes == clients  # the label space is kept


def test_omniglot_validation_alphabets_are_background_alphabets_neither_trained_nor_tested():
    config = load_config(demo_config_path(), [])
    train, validation, test = build_datasets(config)
    assert (train.num_clients, validation.num_clients, test.num_clients) == (25, 5, 20)
    classes = [set().union(*(d.client(i).classes.tolist() for i in range(d.num_clients)))
               for d in (train, validation, test)]
    assert not classes[0] & classes[1] and not classes[1] & classes[2]
    assert max(classes[1]) < min(classes[2])  # background characters come first


def test_synthetic_validation_clients_are_generated_apart():
    config = load_config(None, ["data.dataset='synthetic'", "data.num_clients=40",
                                "model.name='mlp'"])
    train, validation, test = build_datasets(config)
    assert validation.num_clients == 6
    assert not np.array_equal(validation.client(0).x, train.client(0).x)
    assert not np.array_equal(validation.client(0).x, test.client(0).x)


class Spy(FederatedDataset):
    """A dataset that records which clients were read."""

    def __init__(self, inner: FederatedDataset) -> None:
        self.inner, self.name, self.reads = inner, inner.name, []

    @property
    def num_clients(self):
        return self.inner.num_clients

    def client(self, i):
        self.reads.append(i)
        return self.inner.client(i)

    def client_size(self, i):
        return self.inner.client_size(i)

    @property
    def input_shape(self):
        return self.inner.input_shape

    @property
    def num_classes(self):
        return self.inner.num_classes


def test_no_metric_during_training_reads_a_meta_test_client(tmp_path):
    """Evaluated every round, early stopping and personalization on: training reads the
    meta-validation clients only; the meta-test clients once, after it, for the selected
    round's model."""
    config = load_config(demo_config_path(), TINY + [
        "server.rounds=4", "eval.every=1", "eval.patience=2", "eval.personalization_episodes=1"])
    experiment = build_experiment(config)
    experiment.validation, experiment.test = Spy(experiment.validation), Spy(experiment.test)
    simulation = Simulation(experiment)
    logged = []
    simulation.run([lambda r, p, s, metrics: logged.append(metrics)])
    assert experiment.test.reads == [] and experiment.validation.reads
    assert all("val_accuracy" in m and "val_personal_accuracy" in m for m in logged)
    assert not any(k.startswith(("test_", "personal_")) for m in logged for k in m)

    run = RunDirectory.create(config, tmp_path / "run")
    summary = train_and_summarize(Simulation(experiment), run, progress=False)
    assert sorted(experiment.test.reads) == list(range(experiment.test.num_clients))
    lines = [json.loads(line) for line in run.metrics_path.read_text().splitlines()]
    best = max(lines, key=lambda m: m["val_accuracy"])
    assert summary["selected"]["round"] == best["round"]
    assert "personal_accuracy" in summary["meta_test"]


def test_the_kept_model_is_the_selected_round_s(tmp_path):
    """The summary's meta-test scores the params of the selected round, not the last."""
    config = load_config(demo_config_path(), TINY + ["server.rounds=3", "eval.every=1",
                                                    "run.checkpoint_every=1"])
    simulation = Simulation(build_experiment(config))
    run = RunDirectory.create(config, tmp_path / "run")
    summary = train_and_summarize(simulation, run, progress=False)
    selected = f"round_{summary['selected']['round']:05d}.safetensors"
    kept = load_checkpoint(run.checkpoints / selected)[0]
    assert simulation.evaluate(kept, 20)["test_accuracy"] == summary["meta_test"]["accuracy"]


def test_early_stopping_without_validation_clients_is_a_config_error():
    config = load_config(demo_config_path(), TINY + ["data.validation_fraction=0",
                                                    "eval.patience=2"])
    with pytest.raises(UserError, match="eval.patience stops on the meta-validation clients"):
        Simulation(build_experiment(config)).check_data()


def test_no_validation_clients_means_no_evaluation_during_training():
    config = load_config(demo_config_path(), TINY + ["data.validation_fraction=0",
                                                    "server.rounds=2", "eval.every=1"])
    logged = []
    Simulation(build_experiment(config)).run([lambda r, p, s, m: logged.append(m)])
    assert len(logged) == 2 and not any("accuracy" in k for m in logged for k in m)


def test_a_fraction_leaving_no_training_client_is_one_line():
    config = load_config(demo_config_path(), ["data.partition='random'", "data.num_clients=2",
                                "data.validation_fraction=0.6"])
    with pytest.raises(UserError, match="data.validation_fraction: holding out 2 of 2"):
        build_datasets(config)


def test_a_minority_of_evaluable_held_out_clients_is_a_warning(caplog):
    rich = ClientData(torch.zeros(10, 2), torch.arange(10) % 5)  # 5 classes of 2
    poor = ClientData(torch.zeros(2, 2), torch.tensor([0, 1]))
    sampler = EpisodeSampler(ways=5, shots=1, queries=1)
    assert eligible_clients([rich, rich, poor], sampler) == [rich, rich]
    assert not caplog.records
    assert eligible_clients([rich, poor, poor], sampler) == [rich]
    assert "only 1 of 3 held-out clients have enough data for 5-way 1-shot" in caplog.text


def test_the_meta_test_says_how_many_held_out_clients_it_could_evaluate():
    rich = ClientData(torch.randn(10, 2), torch.arange(10) % 5)
    poor = ClientData(torch.zeros(2, 2), torch.tensor([0, 1]))
    learner = mlp_learner(ProtoNet, hidden=(), ways=None, dtype=torch.float32)
    result = meta_test(learner, {k: v for k, v in learner.init_params().items()},
                       [rich, poor, rich, poor, poor], EpisodeSampler(5, 1, 1), 4,
                       torch.Generator().manual_seed(0))
    assert (result.held_out_clients, result.eligible_clients) == (5, 2)
    assert {"held_out_clients": 5, "eligible_clients": 2}.items() <= result.as_dict().items()


def test_pooled_episodes_draw_their_classes_across_the_held_out_clients():
    """`eval.pooled`: each held-out client's two classes are one same point, so a 2-way episode
    of one client is a coin toss that ProtoNets' tie always calls for the first class (exactly
    1/2); pooled, a pair of classes comes from one client with chance 1/(2k - 1) (k = 3
    clients: 1/5), else from two clients an embedding tells apart: 1 - 1/10 expected, on the
    meta-validation clients as on the meta-test ones."""
    x = np.repeat(np.arange(1, 4, dtype=np.float32), 8)[:, None] * np.ones(4, np.float32)
    y = np.tile(np.repeat([0, 1], 4), 3)
    held = ArrayFederatedDataset("toy", x, y, np.arange(24).reshape(3, 8))
    config = load_config(None, ["data.dataset='synthetic'", "data.num_clients=3",
                                "model.name='mlp'", "learner.algorithm='protonet'", "task.ways=2",
                                "eval.ways=2", "eval.shots=1", "eval.queries=2",
                                "eval.pooled=true"])
    experiment = build_experiment(config, (held, held, held))
    simulation = Simulation(experiment)
    params = experiment.learner.init_params()
    for on in ("val", "test"):
        metrics = simulation.evaluate(params, 400, on=on)
        assert metrics[f"{on}_accuracy"] == 0.5
        assert metrics[f"{on}_pooled_accuracy"] == pytest.approx(0.9, abs=0.05)


@pytest.mark.parametrize("data", [
    ["data.dataset='fashion-mnist'"],
    ["data.dataset='movielens'", "model.name='melu'", "learner.algorithm='maml'"],
    ["data.dataset='femnist'", "task.labels='global'", "learner.algorithm='fedavg'"]])
def test_pooled_episodes_of_tasks_that_are_not_episodes_are_a_config_error(data):
    config = load_config(None, [*data, "eval.pooled=true"])
    with pytest.raises(UserError, match="eval.pooled draws N-way episodes"):
        build_experiment(config)
