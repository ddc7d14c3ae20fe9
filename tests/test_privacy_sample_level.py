"""Sample-level DP-SGD in a FedAvg client (Abadi et al. 2016): per-example clipping against a
manual autograd loop, the noise added as given, vmap over clients equal to the loop, the
client accountant against dp-accounting, and the run summary."""

import json

import dp_accounting
import pytest
import torch
import torch.nn.functional as F
from dp_accounting.rdp import RdpAccountant

from fedmeta.build import LEARNERS, build_experiment
from fedmeta.config import load_config
from fedmeta.engine.cohort import run_cohort
from fedmeta.errors import UserError
from fedmeta.learners.fedavg import FedAvg
from fedmeta.privacy.accountant import without_replacement_epsilon as client_epsilon
from test_cli import demo
from tiny import feature_client, mlp_learner


def dp_learner(clip: float, noise: float) -> FedAvg:
    return mlp_learner(FedAvg, ways=4, dtype=torch.float32, batch_size=10, local_steps=2,
                       sample_clip_norm=clip, sample_noise_multiplier=noise)


def manual_clipped_mean(learner, params, x, y, clip):
    total = {k: torch.zeros_like(v) for k, v in params.items()}
    for xi, yi in zip(x, y):
        leaves = {k: v.detach().clone().requires_grad_() for k, v in params.items()}
        loss = F.cross_entropy(learner.forward(leaves, xi[None]), yi[None])
        grads = dict(zip(leaves, torch.autograd.grad(loss, list(leaves.values()))))
        norm = torch.sqrt(sum(g.pow(2).sum() for g in grads.values()))
        assert norm > clip  # the test clips every example
        for k in total:
            total[k] += grads[k] * (clip / norm)
    return {k: v / len(x) for k, v in total.items()}


def test_dp_sgd_gradient_is_the_mean_of_clipped_per_example_gradients_plus_given_noise():
    learner, client = dp_learner(clip=0.01, noise=0.0), feature_client()
    params = learner.init_params()
    x, y, mask, noise = learner.local_batches(client, torch.Generator().manual_seed(0))[0]
    grads, _ = learner.local_gradient(params, (x, y, mask, noise))
    expected = manual_clipped_mean(learner, params, x, y, 0.01)
    for k in params:
        torch.testing.assert_close(grads[k], expected[k], atol=1e-7, rtol=1e-4)
    noisy = dp_learner(clip=0.01, noise=2.0)
    noisy_grads, _ = noisy.local_gradient(params, (x, y, mask, noise))
    for k in params:
        torch.testing.assert_close(noisy_grads[k], expected[k] + 2.0 * 0.01 * noise[k] / 10,
                                   atol=1e-7, rtol=1e-4)


def test_dp_sgd_cohort_vmapped_equals_the_loop():
    learner = dp_learner(clip=0.5, noise=1.0)
    params = learner.init_params()
    clients = [feature_client(seed=s) for s in (1, 2, 3)]
    gens = lambda: [torch.Generator().manual_seed(s) for s in (4, 5, 6)]  # noqa: E731
    loop = run_cohort(learner, params, clients, gens(), "loop")
    vmapped = run_cohort(learner, params, clients, gens(), "vmap")
    for k in params:
        torch.testing.assert_close(vmapped.deltas[k], loop.deltas[k], atol=1e-6, rtol=1e-4)


def test_client_epsilon_is_dp_accountings_sampling_without_replacement():
    accountant = RdpAccountant(neighboring_relation=dp_accounting.NeighboringRelation.REPLACE_ONE)
    accountant.compose(dp_accounting.SampledWithoutReplacementDpEvent(
        200, 20, dp_accounting.GaussianDpEvent(1.2)), 40)
    assert client_epsilon(1.2, 20, 200, 40, 1e-5) == pytest.approx(accountant.get_epsilon(1e-5))
    assert client_epsilon(1.2, 20, 2000, 40, 1e-5) < client_epsilon(1.2, 20, 200, 40, 1e-5)


def test_dp_sgd_is_refused_for_meta_learners_and_needs_a_clip_norm():
    """A learner says whether it takes DP-SGD (`Learner.sample_level_dp`): the meta-learners'
    local losses are no mean over examples, so per-example clipping bounds nothing."""
    supported = ["ditto", "fedavg", "fedavg-ft", "fedbn", "fedper", "fedprox", "local",
                 "scaffold"]
    assert sorted(k for k, cls in LEARNERS.items() if cls.sample_level_dp) == supported
    config = load_config(None, ["privacy.sample_clip_norm=1.0", "learner.algorithm='maml'"])
    with pytest.raises(UserError, match=rf"mean over examples \({', '.join(supported)}\)"):
        build_experiment(config)
    with pytest.raises(UserError, match="needs privacy.sample_clip_norm"):
        load_config(None, ["privacy.sample_noise_multiplier=1.0", "learner.algorithm='fedavg'"])


def test_summary_reports_the_smallest_clients_epsilon(tmp_path):
    out = tmp_path / "run"
    assert demo(out, "learner.algorithm='fedavg'", "learner.batch_size=16",
                "privacy.sample_clip_norm=1.0", "privacy.sample_noise_multiplier=1.0") == 0
    sample = json.loads((out / "summary.json").read_text())["privacy"]["sample_level"]
    assert sample["epsilon_smallest_client"] == pytest.approx(
        client_epsilon(1.0, 16, sample["smallest_client"], 2 * 2, 1e-5))
