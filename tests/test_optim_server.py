import numpy as np
import pytest
import torch

from fedmeta.build import build_experiment
from fedmeta.cli import demo_config_path
from fedmeta.config import load_config
from fedmeta.engine.experiment import learner_at_round
from fedmeta.optim import adam, apply_updates, cosine_decay, scheduled, sgd, step_decay, yogi
from fedmeta.server import Round, chain, server_optimizer, weighted_mean


def quadratic_params():
    return {"w": torch.tensor([1.0, -2.0, 3.0]), "b": torch.tensor([[0.5]])}


def grads_of(params):
    return {k: 2 * v for k, v in params.items()}  # gradient of sum(v^2)


@pytest.mark.parametrize("ours, theirs", [
    (lambda: sgd(0.1), lambda p: torch.optim.SGD(p, lr=0.1)),
    (lambda: sgd(0.1, momentum=0.9), lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9)),
    (lambda: adam(0.05), lambda p: torch.optim.Adam(p, lr=0.05)),
])
def test_optimizers_match_torch(ours, theirs):
    params = quadratic_params()
    reference = {k: v.clone().requires_grad_() for k, v in params.items()}
    optimizer, torch_optimizer = ours(), theirs(list(reference.values()))
    state = optimizer.init(params)
    for _ in range(5):
        updates, state = optimizer.update(grads_of(params), state)
        params = apply_updates(params, updates)
        torch_optimizer.zero_grad()
        sum(v.pow(2).sum() for v in reference.values()).backward()
        torch_optimizer.step()
    for k in params:
        torch.testing.assert_close(params[k], reference[k].detach())


def test_yogi_second_moment_is_additive():
    # Zaheer et al. 2018: v_t = v_{t-1} - (1 - b2) g^2 sign(v_{t-1} - g^2); no bias correction.
    optimizer = yogi(0.1, b1=0.0, b2=0.9, eps=1e-3)
    state = optimizer.init({"w": torch.zeros(2)})
    g = torch.tensor([2.0, -1.0])
    updates, state = optimizer.update({"w": g}, state)
    v = 0 - 0.1 * g * g * torch.sign(0 - g * g)
    torch.testing.assert_close(state["v"]["w"], v)
    torch.testing.assert_close(updates["w"], -0.1 * g / (v.sqrt() + 1e-3))


def test_weighted_mean_and_server_sgd_match_numpy():
    rng = np.random.default_rng(0)
    deltas = rng.normal(size=(4, 3, 2)).astype(np.float32)
    weights = np.array([1.0, 5.0, 2.0, 10.0], dtype=np.float32)
    pipeline = chain(weighted_mean(), server_optimizer(sgd(0.5)))
    state = pipeline.init({"w": torch.zeros(3, 2)})
    rnd, _ = pipeline.apply(Round({"w": torch.from_numpy(deltas)}, torch.from_numpy(weights)),
                            state)
    expected = 0.5 * np.average(deltas, axis=0, weights=weights)
    np.testing.assert_allclose(rnd.deltas["w"].numpy(), expected, rtol=1e-6)
    assert rnd.aggregated


def test_server_optimizer_needs_an_aggregator_first():
    pipeline = chain(server_optimizer(sgd(1.0)))
    with pytest.raises(ValueError, match="after an aggregator"):
        pipeline.apply(Round({"w": torch.zeros(2, 3)}, torch.ones(2)),
                       pipeline.init({"w": torch.zeros(3)}))


@pytest.mark.parametrize("schedule, theirs", [
    (lambda: step_decay(3, 0.5), lambda o: torch.optim.lr_scheduler.StepLR(o, 3, 0.5)),
    (lambda: cosine_decay(8), lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, 8)),
])
@pytest.mark.parametrize("base", [
    (lambda: sgd(0.1, momentum=0.9), lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9)),
    (lambda: adam(0.05), lambda p: torch.optim.Adam(p, lr=0.05)),
])
def test_scheduled_optimizers_match_torch_with_its_lr_schedulers(schedule, theirs, base):
    ours_base, theirs_base = base
    params = quadratic_params()
    reference = {k: v.clone().requires_grad_() for k, v in params.items()}
    optimizer = theirs_base(list(reference.values()))
    scheduler = theirs(optimizer)
    transform = scheduled(ours_base(), schedule())
    state = transform.init(params)
    for _ in range(8):
        updates, state = transform.update(grads_of(params), state)
        params = apply_updates(params, updates)
        optimizer.zero_grad()
        sum((v ** 2).sum() for v in reference.values()).backward()
        optimizer.step()
        scheduler.step()
    assert int(state["step"]) == 8
    for k in params:
        torch.testing.assert_close(params[k], reference[k].detach(), rtol=1e-5, atol=1e-6)


def test_a_round_s_local_rate_follows_the_client_schedule():
    """One local SGD step: the delta is the rate times the gradient, so under step decay
    (halving every round) round 3's delta is a quarter of round 1's on the same batch."""
    config = load_config(demo_config_path(), [
        "model.hidden=8", "learner.optimizer='sgd'", "learner.lr=0.1", "learner.local_steps=1",
        "server.rounds=4",
        "learner.lr_schedule='step'", "learner.lr_decay_every=1", "learner.lr_decay=0.5"])
    experiment = build_experiment(config)
    learner, params = experiment.learner, experiment.learner.init_params()
    batches = learner.local_batches(experiment.train.client(0), torch.Generator().manual_seed(0))
    deltas = [learner_at_round(learner, config, r).train_local(params, batches, 1.0).delta
              for r in (1, 3)]
    for k in params:
        torch.testing.assert_close(deltas[1][k], deltas[0][k] / 4)
    constant = load_config(demo_config_path(), ["learner.lr_schedule='constant'"])
    assert learner_at_round(learner, constant, 3) is learner  # no schedule: the learner as is
