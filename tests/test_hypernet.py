"""pFedHN: the server's update is the chain rule through the hypernetwork (against finite
differences), each client gets its own model, a new client learns only its embedding, and a
federated run learns."""

import numpy as np
import pytest
import torch

from fedmeta.build import build_experiment
from fedmeta.config import load_config
from fedmeta.data import ArrayFederatedDataset, own_splits
from fedmeta.engine.simulation import Simulation
from fedmeta.errors import UserError
from fedmeta.evaluation import own_split_test
from fedmeta.learners.hypernet import PFedHN
from fedmeta.seeding import seeded
from fedmeta.server import Round
from tiny import feature_client, float_episodes, mlp_learner

CLIENTS = 4




@pytest.fixture
def learner() -> PFedHN:
    torch.manual_seed(0)
    learner = mlp_learner(PFedHN, ways=None, num_clients=CLIENTS, embedding_dim=3,
                          hypernet_hidden=6)
    learner.hypernet.double()
    for head in learner.hypernet.heads:
        torch.nn.init.normal_(head.weight, std=0.3)
    return learner


def inner(a: dict, b: dict) -> torch.Tensor:
    return sum((a[k] * b[k]).sum() for k in a)


def test_the_server_update_is_the_chain_rule_through_the_hypernetwork(learner):
    params = learner.init_params()
    clients = torch.tensor([2, 0])
    g = torch.Generator().manual_seed(3)
    sent = learner.client_params(params, clients)
    deltas = {k: torch.randn(v.shape, generator=g, dtype=v.dtype) for k, v in sent.items()}
    rows = learner.server_round(params, Round(deltas, torch.ones(2), clients=clients)).deltas
    assert set(rows) == set(params) and all(v.shape[0] == 2 for v in rows.values())
    direction = {k: torch.randn(v.shape, generator=g, dtype=v.dtype) for k, v in params.items()}
    eps = 1e-6
    for row, client in enumerate(clients.tolist()):
        delta = {k: v[row] for k, v in deltas.items()}

        def objective(p):  # <theta_client(p), delta>: its gradient is J^T delta
            return inner(learner.generate(p, p["embeddings.weight"][client]), delta)

        shifted = lambda s: {k: params[k] + s * direction[k] for k in params}  # noqa: E731
        finite = (objective(shifted(eps)) - objective(shifted(-eps))) / (2 * eps)
        pulled = {k: v[row] for k, v in rows.items()}
        assert inner(pulled, direction).item() == pytest.approx(finite.item(), rel=1e-6)
        untouched = [c for c in range(CLIENTS) if c != client]
        assert (pulled["embeddings.weight"][untouched] == 0).all()
        assert pulled["embeddings.weight"][client].abs().sum() > 0


def test_each_client_is_sent_the_model_its_embedding_generates(learner):
    params = learner.init_params()
    sent = learner.client_params(params, torch.tensor([1, 3, 1]))
    for row, client in enumerate([1, 3, 1]):
        expected = learner.generate(params, params["embeddings.weight"][client])
        for k, v in expected.items():
            torch.testing.assert_close(sent[k][row], v.detach())
    assert not torch.equal(*(next(iter(sent.values()))[:2]))
    empty = learner.client_params(params, torch.zeros(0, dtype=torch.int64))
    assert all(v.shape[0] == 0 for v in empty.values())


def test_a_new_client_learns_only_its_embedding_on_its_support_set(learner):
    params = learner.init_params()
    before = {k: v.clone() for k, v in params.items()}
    episode = float_episodes(num=1, shots=3)
    sx, sy = episode.support_x[0], episode.support_y[0]
    learner.embedding_steps = 0
    mean_model = learner.new_client(params, sx, sy)
    learner.embedding_steps = 20
    tuned = learner.new_client(params, sx, sy)
    for k, v in learner.generate(params, params["embeddings.weight"].mean(0)).items():
        torch.testing.assert_close(mean_model[k], v.detach())
    assert learner.support_loss(tuned, sx, sy) < learner.support_loss(mean_model, sx, sy)
    assert all(torch.equal(params[k], before[k]) for k in params)  # the server's are unchanged


def test_each_training_client_scores_its_own_split_with_the_model_it_is_sent():
    """PFLlib's protocol under pFedHN: client i's own test split is scored by prototypes, from
    its own training examples, of the model its embedding generates."""
    torch.manual_seed(0)
    learner = mlp_learner(PFedHN, ways=None, dtype=torch.float32, num_clients=CLIENTS,
                          embedding_dim=3, hypernet_hidden=6)
    for head in learner.hypernet.heads:
        torch.nn.init.normal_(head.weight, std=0.5)
    params = learner.init_params()
    own = [feature_client(per_class=6, seed=s) for s in range(CLIENTS)]
    sizes = np.cumsum([0] + [len(c.y) for c in own])
    dataset = ArrayFederatedDataset(
        "toy", torch.cat([c.x for c in own]).numpy(), torch.cat([c.y for c in own]).numpy(),
        [np.arange(a, b) for a, b in zip(sizes[:-1], sizes[1:])],
        np.arange(sizes[-1]) % 3 == 0)
    train, _, test = own_splits(dataset, 0.0, 0)

    scored, personal_correct = [], learner.personal_correct
    learner.personal_correct = lambda model, *args: scored.append(model) or personal_correct(
        model, *args)
    result, _ = own_split_test(learner, params, None, train, test, 2, (1,))
    for i, model in enumerate(scored):
        generated = learner.generate(params, params["embeddings.weight"][i])
        for k, v in generated.items():
            torch.testing.assert_close(model[k], v, rtol=0, atol=0)
        correct = personal_correct(generated, {}, train.client(i), test.client(i), 2,
                                   seeded(1, i))  # client i's own stream
        assert result.per_client_accuracy[i] == correct.float().mean().item()
    assert len(scored) == CLIENTS


@pytest.mark.parametrize("setting", ["aggregation.rule=median", "aggregation.secure=ckks",
                                     "aggregation.compression=topk"])
def test_pfedhn_refuses_what_needs_the_clients_updates_as_sent(setting):
    """pFedHN is `personalized`: its server step needs each client's update as sent."""
    with pytest.raises(UserError, match="pfedhn turns each client's update"):
        build_experiment(load_config(None, ["learner.algorithm=pfedhn", setting]))


def test_a_federated_pfedhn_run_personalizes_and_learns():
    config = load_config(None, [
        "learner.algorithm=pfedhn", "data.path=bundled", "model.hidden=8", "server.rounds=12",
        "server.clients_per_round=4", "server.optimizer=adam", "server.lr=0.003",
        "learner.optimizer=sgd", "learner.lr=0.1", "learner.local_steps=2", "eval.every=0",
        "eval.queries=5", "learner.embedding_steps=3"])
    experiment = build_experiment(config)
    simulation = Simulation(experiment)
    learner = experiment.learner
    params = learner.init_params()
    state = experiment.pipeline.init(params)
    untrained = simulation.evaluate(params, 60)["test_accuracy"]
    losses = []
    for round_index in range(1, config.server.rounds + 1):
        params, state, metrics = simulation.round(round_index, params, state)
        losses.append(metrics["loss"])
    target_bytes = sum(p.numel() * 4 for p in learner.model.parameters())
    assert metrics["bytes_down"] == 4 * target_bytes  # a generated model, not the hypernetwork
    sent = learner.client_params(params, torch.tensor([0, 1]))
    assert not torch.equal(sent["features.0.0.weight"][0], sent["features.0.0.weight"][1])
    assert sum(losses[-4:]) < sum(losses[:4])
    assert simulation.evaluate(params, 60)["test_accuracy"] > untrained
