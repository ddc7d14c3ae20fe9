"""The personalized-FL baselines: SCAFFOLD, Ditto and FedRep against closed forms of gradient
descent on quadratics; FedPer, FedBN and local-only keep their layers on the client; what
each refuses is one line."""

import pytest
import torch
from torch import nn

from fedmeta.build import build_experiment
from fedmeta.config import load_config
from fedmeta.data import EpisodeSampler
from fedmeta.engine.client_state import CLIENTS
from fedmeta.engine.simulation import Simulation
from fedmeta.errors import UserError
from fedmeta.learners.ditto import Ditto
from fedmeta.learners.fedavg import FedAvg
from fedmeta.learners.fedbn import FedBN
from fedmeta.learners.fedper import FedPer
from fedmeta.learners.fedrep import FedRep
from fedmeta.learners.local import Local
from fedmeta.learners.scaffold import CONTROL, Scaffold
from fedmeta.optim import sgd
from fedmeta.params import tree_add
from fedmeta.server import Round
from fedmeta.models import MLP
from tiny import DIM, feature_client, mlp_learner

F64 = torch.float64


class Quadratic:
    """Client i's loss f_i(w) = a_i / 2 ||w - b_i||^2 (its batch: (a_i, b_i)), in place of
    the learner's data loss."""

    def local_gradient(self, params, batch):
        a, b = batch
        w = params["weight"]
        return {"weight": a * (w - b)}, 0.5 * a * ((w - b) ** 2).sum()


class QuadraticScaffold(Quadratic, Scaffold):
    pass


class QuadraticDitto(Quadratic, Ditto):
    pass


class QuadraticFedAvg(Quadratic, FedAvg):
    pass


def linear(dim=3):
    return nn.Linear(dim, 1, bias=False).to(F64)


def scaffold(lr, steps, clients):
    return QuadraticScaffold(linear(), EpisodeSampler(2, 1, 1), sgd(lr), steps, lr=lr,
                             num_clients=clients)


def test_scaffold_s_client_round_is_corrected_sgd_and_option_two():
    """y <- y - lr (a (y - b) + c - c_i) for K steps; c_i+ = c_i - c + (x - y) / (K lr)."""
    g = torch.Generator().manual_seed(0)
    x, c, c_i, b = torch.randn(4, 1, 3, generator=g, dtype=F64)
    a, lr, steps = 1.7, 0.05, 6
    learner = scaffold(lr, steps, clients=4)
    update = learner.train_local({"weight": x, CONTROL + "weight": c}, [(a, b)] * steps, 1.0,
                                 {"weight": c_i})
    y = x.clone()
    for _ in range(steps):
        y = y - lr * (a * (y - b) + c - c_i)
    torch.testing.assert_close(update.delta["weight"], y - x, rtol=0, atol=1e-14)
    expected_ci = c_i - c + (x - y) / (steps * lr)
    torch.testing.assert_close(update.state["weight"], expected_ci, rtol=0, atol=1e-12)
    torch.testing.assert_close(update.delta[CONTROL + "weight"], expected_ci - c_i,
                               rtol=0, atol=1e-12)


def federate(learner, clients, rounds, cohort):
    """Rounds of `cohort(round)` clients from the learner's init: the server adds the mean of
    the rows `server_round` makes of the clients' updates."""
    params = {k: torch.zeros_like(v) for k, v in learner.init_params().items()}
    states = [learner.initial_state() for _ in clients]
    for r in range(rounds):
        chosen = cohort(r)
        updates = [learner.train_local(params, [clients[i]] * learner.local_steps, 1.0,
                                       states[i]) for i in chosen]
        for i, update in zip(chosen, updates):
            states[i] = update.state
        rows = learner.server_round(params, Round(
            {k: torch.stack([u.delta[k] for u in updates]) for k in params},
            torch.ones(len(chosen)), clients=torch.tensor(chosen)))
        params = tree_add(params, {k: v.mean(0) for k, v in rows.deltas.items()})
    return params


@pytest.mark.parametrize("full", [True, False])
def test_scaffold_reaches_the_federation_s_optimum_where_local_steps_bias_fedavg(full):
    """Heterogeneous curvatures a_i: the optimum of the mean loss is sum a_i b_i / sum a_i.
    With many local steps FedAvg settles elsewhere (each client nearly reaches its own b_i);
    SCAFFOLD's drift correction reaches it, with all clients or half of them a round."""
    g = torch.Generator().manual_seed(1)
    a = torch.tensor([0.5, 1.0, 2.0, 4.0], dtype=F64)
    b = torch.randn(4, 1, 3, generator=g, dtype=F64)
    clients = list(zip(a.tolist(), b))
    optimum = (a[:, None, None] * b).sum(0) / a.sum()
    cohort = (lambda r: [0, 1, 2, 3]) if full else (lambda r: [r % 4, (r + 1) % 4])
    learner = scaffold(lr=0.1, steps=10, clients=4)
    found = federate(learner, clients, 300, cohort)["weight"]
    torch.testing.assert_close(found, optimum, rtol=0, atol=1e-6)
    fedavg = QuadraticFedAvg(linear(), EpisodeSampler(2, 1, 1), sgd(0.1), 10)
    settled = federate(fedavg, clients, 300, cohort)["weight"]
    assert settled.sub(optimum).abs().max() > 1e-2


def test_ditto_s_personal_model_descends_its_loss_pulled_to_the_global_model():
    """v_K - v* = (1 - lr (a + lambda))^K (v_0 - v*), v* = (a b + lambda w) / (a + lambda);
    the global model's steps are FedAvg's."""
    g = torch.Generator().manual_seed(2)
    w, v0, b = torch.randn(3, 1, 3, generator=g, dtype=F64)
    a, lam, lr, steps = 1.3, 0.8, 0.1, 7
    learner = QuadraticDitto(linear(), EpisodeSampler(2, 1, 1), sgd(lr), steps, proximal_mu=lam)
    update = learner.train_local({"weight": w}, [(a, b)] * (2 * steps), 1.0, {"weight": v0})
    target = (a * b + lam * w) / (a + lam)
    expected = target + (1 - lr * (a + lam)) ** steps * (v0 - target)
    torch.testing.assert_close(update.state["weight"], expected, rtol=0, atol=1e-12)
    global_end = b + (1 - lr * a) ** steps * (w - b)
    torch.testing.assert_close(update.delta["weight"], global_end - w, rtol=0, atol=1e-12)


class TwoLayer(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Linear(1, 1, bias=False).to(F64)
        self.head = nn.Linear(1, 1, bias=False).to(F64)


class CoupledFedRep(FedRep):
    """f(h, B) = 1/2 (h B - t)^2 on scalars: the head's step depends on the body and back."""

    def local_gradient(self, params, batch):
        h, body = params["head.weight"], params["body.weight"]
        residual = h * body - batch
        return {"head.weight": residual * body, "body.weight": residual * h}, 0.5 * residual ** 2


def test_fedrep_trains_the_head_with_the_body_fixed_then_the_body_with_the_new_head():
    lr, head_steps, body_steps, t = 0.1, 5, 3, 2.0
    learner = CoupledFedRep(TwoLayer(), EpisodeSampler(2, 1, 1), sgd(lr), body_steps,
                            head_steps=head_steps)
    h0, b0 = torch.tensor([[0.3]], dtype=F64), torch.tensor([[0.7]], dtype=F64)
    update = learner.train_local({"body.weight": b0}, [torch.tensor(t, dtype=F64)]
                                 * (head_steps + body_steps), 1.0, {"head.weight": h0})
    h, body = h0.clone(), b0.clone()
    for _ in range(head_steps):
        h = h - lr * (h * body - t) * body
    for _ in range(body_steps):
        body = body - lr * (h * body - t) * h
    assert update.delta.keys() == {"body.weight"} and update.state.keys() == {"head.weight"}
    torch.testing.assert_close(update.state["head.weight"], h, rtol=0, atol=1e-14)
    torch.testing.assert_close(update.delta["body.weight"], body - b0, rtol=0, atol=1e-14)


@pytest.mark.parametrize("cls,kept", [(FedPer, {"head.weight", "head.bias"}),
                                      (FedBN, {"features.2.weight", "features.2.bias",
                                               "features.5.weight", "features.5.bias"})])
def test_local_layers_stay_on_the_client_and_train_with_the_rest(cls, kept):
    """The server's params lack the local layers; a client's round returns them as its state
    (changed by training) and sends the change of the others only."""
    torch.manual_seed(0)
    learner = cls(MLP((DIM,), (6, 6), 4, batch_norm=True), EpisodeSampler(2, 1, 1), sgd(0.1),
                  3, batch_size=8)
    params = learner.init_params()
    state = learner.initial_state()
    assert set(state) == kept and not kept & set(params)
    batches = learner.local_batches(feature_client(), torch.Generator().manual_seed(0))
    update = learner.train_local(params, batches, 1.0, state)
    assert update.delta.keys() == params.keys() and update.state.keys() == kept
    assert all(not torch.equal(update.state[k], state[k]) for k in kept)
    full = learner.personal_model(params, state)
    assert set(full) == {k for k, _ in learner.model.named_parameters()}


def test_local_only_sends_nothing_and_trains_its_own_model():
    learner = mlp_learner(Local, hidden=(6,), ways=4, dtype=torch.float32, batch_size=8,
                          local_steps=3)
    params = learner.init_params()
    batches = learner.local_batches(feature_client(), torch.Generator().manual_seed(0))
    update = learner.train_local(params, batches, 1.0, learner.initial_state())
    assert learner.client_model(params) == {}
    assert all(not v.any() for v in update.delta.values())
    assert any(not torch.equal(update.state[k], params[k]) for k in params)


def config_error(*overrides):
    config = load_config(None, ["data.dataset='synthetic'", "data.num_clients=8",
                                "model.name='mlp'", *overrides])
    with pytest.raises(UserError) as error:
        build_experiment(config)
    return str(error.value)


def test_scaffold_refuses_what_its_control_variates_do_not_model():
    assert "learner.optimizer = 'sgd'" in config_error("learner.algorithm='scaffold'")
    assert "server.lr = 1" in config_error("learner.algorithm='scaffold'",
                                           "learner.optimizer='sgd'", "server.lr=0.5")


@pytest.mark.parametrize("setting", ["aggregation.rule='median'", "aggregation.norm_bound=1.0",
                                     "aggregation.compression='topk'", "privacy.clip_norm=1.0",
                                     "aggregation.secure='secagg+'", "privacy.canaries=2"])
def test_scaffold_refuses_what_changes_an_update_before_the_mean(setting):
    assert "control variate the mean" in config_error(
        "learner.algorithm='scaffold'", "learner.optimizer='sgd'", setting)


def test_scaffold_keeps_c_the_mean_of_the_clients_control_variates():
    """Clients of different sizes, half of them a round: after every round, the server's c
    is the mean of the N clients' c_i (the table the simulation keeps)."""
    config = load_config(None, ["data.dataset='synthetic'", "data.num_clients=6",
                                "model.name='mlp'", "model.hidden=8", "learner.optimizer='sgd'",
                                "learner.lr=0.05", "learner.local_steps=3",
                                "learner.batch_size=8", "server.clients_per_round=3",
                                "server.rounds=4", "eval.every=0",
                                "learner.algorithm='scaffold'"])
    experiment = build_experiment(config)
    assert len({experiment.train.client_size(i) for i in range(6)}) > 1
    checked = []

    def check(round_index, params, state, metrics):
        for key, table in state[CLIENTS].items():
            torch.testing.assert_close(params[CONTROL + key], table.mean(0), rtol=0, atol=1e-6)
        checked.append(round_index)

    Simulation(experiment).run([check])
    assert checked == [1, 2, 3, 4]


def test_fedbn_refuses_a_model_without_batch_norm():
    assert "batch norm" in config_error("learner.algorithm='fedbn'")


@pytest.mark.parametrize("algorithm", ["ditto", "fedper", "fedrep", "fedbn", "local"])
@pytest.mark.parametrize("server", [
    ["privacy.clip_norm=1.0", "privacy.noise_multiplier=0.5"],  # user-level DP
    ["aggregation.rule='median'", "aggregation.compression='topk'"]])
def test_clients_keeping_state_compose_with_dp_robust_rules_and_compression(algorithm, server):
    """Two rounds on Synthetic: each participating client's state moves, the others' stay."""
    config = load_config(None, ["data.dataset='synthetic'", "data.num_clients=6",
                                "model.name='mlp'", "model.batch_norm=true",
                                "learner.optimizer='sgd'", "learner.lr=0.05",
                                "learner.local_steps=2", "learner.batch_size=8",
                                "server.clients_per_round=3", "server.rounds=2", "eval.every=0",
                                f"learner.algorithm='{algorithm}'", *server])
    experiment = build_experiment(config)
    simulation = Simulation(experiment)
    states = []
    simulation.run([lambda r, p, s, m: states.append(s[CLIENTS])])
    initial = experiment.initial_state(experiment.learner.init_params())[CLIENTS]
    moved = {c for c in range(6) if any(not torch.equal(states[-1][k][c], initial[k][c])
                                        for k in initial)}
    cohorts = {int(c) for r in (1, 2) for c in simulation.cohort(r)}
    assert moved == cohorts
