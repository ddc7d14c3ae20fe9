"""Unreliable clients: dropouts and stragglers as configured, rounds below `min_clients`
leaving the model unchanged, and clients that raise or send NaN/Inf left out and logged."""

import logging
import math
from dataclasses import replace

import pytest
import torch

from fedmeta.build import build_experiment
from fedmeta.config import load_config
from fedmeta.data import ClientData
from fedmeta.engine import cohort
from fedmeta.engine.cohort import run_cohort
from fedmeta.engine.faults import Faults
from fedmeta.engine.simulation import Simulation
from fedmeta.learners.protonet import ProtoNet
from tiny import feature_client, mlp_learner

SYNTHETIC = ["data.dataset=synthetic", "data.num_clients=40", "model.name=mlp",
             "model.hidden=8", "learner.algorithm=fedavg", "server.clients_per_round=10",
             "eval.every=0", "eval.final_episodes=10"]


def test_dropout_happens_at_its_rate_and_is_reproducible():
    faults = Faults(dropout=0.3, deadline=0.0, spread=0.5, seed=1)
    absent = [faults.absent(r, list(range(100))) for r in range(1, 21)]
    rate = sum(map(len, absent)) / 2000
    assert abs(rate - 0.3) < 4 * math.sqrt(0.3 * 0.7 / 2000)
    assert absent[0] == faults.absent(1, list(range(100)))
    assert set(absent[0].values()) == {"dropped out"}


def test_stragglers_miss_the_deadline_and_slow_clients_stay_slow():
    faults = Faults(dropout=0.0, deadline=1.0, spread=1.0, seed=2)
    late = [set(faults.absent(r, list(range(200)))) for r in range(1, 11)]
    rate = sum(map(len, late)) / 2000
    assert abs(rate - 0.5) < 0.05  # the deadline is the median round time
    # each client's own slowness carries over rounds: late once, late again more often
    again = sum(len(a & b) for a, b in zip(late, late[1:])) / sum(map(len, late[:-1]))
    assert again > 0.6
    assert all(r.startswith("straggler") for r in faults.absent(1, list(range(200))).values())


def simulation(extra: list[str]) -> Simulation:
    return Simulation(build_experiment(load_config(None, SYNTHETIC + extra)))


def test_a_round_below_min_clients_leaves_the_model_unchanged():
    sim = simulation(["faults.dropout=0.5", "server.min_clients=6"])
    params = sim.experiment.learner.init_params()
    state = sim.experiment.pipeline.init(params)
    outcomes = []
    for r in range(1, 9):
        new, state, metrics = sim.round(r, params, state)
        assert metrics["clients"] + metrics["dropped"] + metrics["skipped"] == 10
        changed = any(not torch.equal(new[k], params[k]) for k in params)
        assert changed == ("aborted" not in metrics) == (metrics["clients"] >= 6)
        outcomes.append(changed)
        params = new
    assert any(outcomes) and not all(outcomes)  # both kinds of round happened


def test_metrics_say_who_was_left_out_and_why():
    sim = simulation(["faults.dropout=0.2", "faults.deadline=1.5"])
    params = sim.experiment.learner.init_params()
    _, _, metrics = sim.round(3, params, sim.experiment.pipeline.init(params))
    expected = sim.experiment.faults.absent(3, sim.cohort(3).tolist())
    assert expected and metrics["excluded"] == {str(c): why for c, why in expected.items()}
    assert metrics["dropped"] == len(expected)


class Breaking(ProtoNet):
    """A ProtoNet whose local round raises for clients of exactly 30 examples."""

    def local_batches(self, client, generator):
        if len(client) == 30:
            raise RuntimeError("disk on fire")
        return super().local_batches(client, generator)


def clients_with_a_broken_one():
    good = feature_client(per_class=12)
    nan_x = good.x.clone()
    nan_x[0, 0] = math.nan
    return [good, ClientData(good.x[:30], good.y[:30]), replace(good, x=nan_x), good]


@pytest.mark.parametrize("execution", ["loop", "vmap"])
def test_a_raising_client_is_left_out_and_the_rest_aggregate(execution):
    learner = mlp_learner(Breaking, dtype=torch.float32)
    clients = clients_with_a_broken_one()
    gens = [torch.Generator().manual_seed(i) for i in range(4)]
    updates = run_cohort(learner, learner.init_params(), clients, gens, execution, chunk_size=4)
    assert updates.positions == [0, 2, 3] and list(updates.failures) == [1]
    assert "RuntimeError: disk on fire" in updates.failures[1]
    alone = run_cohort(learner, learner.init_params(), [clients[3]],
                       [torch.Generator().manual_seed(3)], execution)
    torch.testing.assert_close({k: v[2] for k, v in updates.deltas.items()},
                               {k: v[0] for k, v in alone.deltas.items()})


def test_a_raising_chunk_under_vmap_is_rerun_client_by_client(monkeypatch):
    learner = mlp_learner(ProtoNet, dtype=torch.float32)
    clients = [feature_client(per_class=12)] * 3
    gens = lambda: [torch.Generator().manual_seed(i) for i in range(3)]  # noqa: E731
    loop = run_cohort(learner, learner.init_params(), clients, gens(), "loop")

    def broken(params, chunk):
        raise RuntimeError("vmap broke")

    monkeypatch.setattr(cohort, "vmapped_round", broken)
    rerun = run_cohort(learner, learner.init_params(), clients, gens(), "vmap")
    assert rerun.positions == [0, 1, 2] and not rerun.failures
    torch.testing.assert_close(rerun.deltas, loop.deltas)


def test_non_finite_updates_are_excluded_and_logged(caplog):
    sim = simulation([])
    params = sim.experiment.learner.init_params()
    cohort = sim.cohort(1).tolist()
    honest = sim.client_updates(1, params, cohort)
    poisoned_client = cohort[4]
    original = sim.experiment.train.client

    def client(i):
        data = original(i)
        return replace(data, x=torch.full_like(data.x, math.inf)) if i == poisoned_client else data

    sim.experiment.train.client = client
    with caplog.at_level(logging.WARNING, logger="fedmeta.engine.simulation"):
        _, _, metrics = sim.round(1, params, sim.experiment.pipeline.init(params))
    assert metrics["failed"] == 1 and metrics["clients"] == honest.num_clients - 1
    assert metrics["excluded"] == {str(poisoned_client): "non-finite update"}
    assert f"client {poisoned_client} left out: non-finite update" in caplog.text
    assert math.isfinite(metrics["loss"])
