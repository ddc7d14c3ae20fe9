"""Update compression (8-bit stochastic quantization, top-k with error feedback) and the bytes
each round counts: unbiasedness and levels, exact top-k, the error-feedback telescope, residuals
through a checkpoint and a resumed run, and hand-computed byte counts."""

import pytest
import torch

from fedmeta.build import build_experiment
from fedmeta.config import load_config
from fedmeta.engine.checkpoint import restore_checkpoint, save_checkpoint
from fedmeta.engine.communication import round_bytes
from fedmeta.engine.simulation import Simulation
from fedmeta.errors import UserError
from fedmeta.privacy.encryption import CkksKeys, ciphertext_bytes, encrypt, load_context
from fedmeta.server import Round
from fedmeta.server.compression import quantize, stochastic_quantization, topk, topk_error_feedback

# A 60-8-8-10 MLP: weights 480, 64, 80 and biases 8, 8, 10 values, 650 float32 (2,600 bytes).
SYNTHETIC = ["data.dataset=synthetic", "data.num_clients=40", "model.name=mlp",
             "model.hidden=8", "learner.algorithm=fedavg", "server.clients_per_round=10",
             "eval.every=0", "eval.final_episodes=10", "server.rounds=4"]


def simulation(*overrides: str) -> Simulation:
    return Simulation(build_experiment(load_config(None, SYNTHETIC + list(overrides))))


def test_quantization_is_unbiased_with_variance_within_a_quarter_step_squared():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 40, generator=g, dtype=torch.float64)
    draws = 4000
    decoded = quantize(x.repeat(draws, 1), 256, g).view(draws, 3, 40)
    step = (x.amax(1) - x.amin(1)) / 255
    assert ((decoded - x).abs() <= step[:, None] * (1 + 1e-9)).all()  # within one step
    # stochastic rounding: the upper level with probability p = the fraction of the step
    p = ((x - x.amin(1, keepdim=True)) / step[:, None]).frac()
    variance = p * (1 - p) * step[:, None] ** 2
    assert (variance <= step[:, None] ** 2 / 4).all()
    assert ((decoded.mean(0) - x).abs() <= 5 * (variance / draws).sqrt() + 1e-12).all()
    # each row's total variance: as computed, and at most size x step^2 / 4
    assert torch.allclose(decoded.var(0).sum(1), variance.sum(1), rtol=0.05)
    assert (decoded.var(0).sum(1) <= 40 * step ** 2 / 4).all()


def test_quantization_uses_exactly_256_levels_from_min_to_max():
    x = torch.rand(2, 20_000, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    decoded = quantize(x, 256, torch.Generator().manual_seed(2))
    for row, values in zip(x, decoded):
        levels = (values - row.min()) / ((row.max() - row.min()) / 255)
        assert torch.allclose(levels, levels.round(), atol=1e-9)
        assert sorted(set(levels.round().long().tolist())) == list(range(256))
    constant = torch.full((1, 5), 0.25)
    assert torch.equal(quantize(constant, 256, torch.Generator()), constant)


def test_the_quantization_stage_draws_by_seed_and_count():
    deltas = {"w": torch.randn(4, 3, 5, generator=torch.Generator().manual_seed(3))}
    rnd = Round(deltas, torch.ones(4))
    stage = stochastic_quantization(seed=7)
    first, state = stage.apply(rnd, stage.init(deltas))
    second, state = stage.apply(rnd, state)
    assert int(state["count"]) == 2
    again, _ = stage.apply(rnd, stage.init(deltas))
    other, _ = stochastic_quantization(seed=8).apply(rnd, stage.init(deltas))
    assert torch.equal(first.deltas["w"], again.deltas["w"])
    assert not torch.equal(first.deltas["w"], second.deltas["w"])
    assert not torch.equal(first.deltas["w"], other.deltas["w"])


def test_topk_keeps_exactly_the_k_largest_magnitudes():
    x = torch.randn(5, 300, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    sent = topk(x, 17)
    for row, kept in zip(x, sent):
        largest = set(row.abs().argsort(descending=True)[:17].tolist())
        assert set(kept.nonzero().flatten().tolist()) == largest
        assert torch.equal(kept[list(largest)], row[list(largest)])


def dyadic(shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """Multiples of 1/64 below 2^4 in magnitude: their sums are exact in float64."""
    return torch.randint(-1000, 1000, shape, generator=generator).double() / 64


def test_error_feedback_sends_every_update_eventually():
    """Over rounds of varying cohorts, what a client sent plus its final residual is the sum
    of its true updates, exactly; a canary (negative id) sends its top-k and keeps nothing."""
    g = torch.Generator().manual_seed(5)
    params = {"w": torch.zeros(3, 4, dtype=torch.float64), "b": torch.zeros(6, dtype=torch.float64)}
    stage = topk_error_feedback(0.25)
    state = stage.init(params)
    true = {c: {k: torch.zeros_like(v) for k, v in params.items()} for c in range(6)}
    sent = {c: {k: torch.zeros_like(v) for k, v in params.items()} for c in range(6)}
    for _ in range(8):
        ids = torch.randperm(6, generator=g)[:int(torch.randint(1, 6, (), generator=g))]
        clients = torch.cat([ids, torch.tensor([-1])])
        deltas = {k: dyadic((len(clients), *v.shape), g) for k, v in params.items()}
        rnd, state = stage.apply(Round(deltas, torch.ones(len(clients)), clients=clients), state)
        assert torch.equal(rnd.deltas["w"][-1], topk(deltas["w"][-1:].flatten(1), 3)[0].view(3, 4))
        for row, c in enumerate(ids.tolist()):
            for k in params:
                true[c][k] += deltas[k][row]
                sent[c][k] += rnd.deltas[k][row]
            assert (rnd.deltas["w"][row] != 0).sum() <= 3 and (rnd.deltas["b"][row] != 0).sum() <= 2
    assert -1 not in state["clients"].tolist()
    for row, c in enumerate(state["clients"].tolist()):
        for k in params:
            assert torch.equal(sent[c][k] + state["residual"][k][row], true[c][k])


def test_error_feedback_needs_the_clients_ids():
    stage = topk_error_feedback(0.5)
    with pytest.raises(ValueError, match="client ids"):
        stage.apply(Round({"w": torch.ones(2, 3)}, torch.ones(2)), stage.init({"w": torch.ones(3)}))


@pytest.mark.parametrize("compression", ["topk", "quantize-8bit"])
def test_a_run_resumed_from_a_checkpoint_ends_as_one_never_stopped(tmp_path, compression):
    overrides = [f"aggregation.compression='{compression}'", "aggregation.topk_fraction=0.1"]
    states = {}

    def keep(round_index, params, state, metrics):
        states[round_index] = (params, state)

    uninterrupted = simulation(*overrides).run([keep])
    path = tmp_path / "round_2.safetensors"
    save_checkpoint(path, *states[2], 2)
    resumed_simulation = simulation(*overrides)
    initial = resumed_simulation.experiment.learner.init_params()
    params, state, round_index = restore_checkpoint(
        path, initial, resumed_simulation.experiment.pipeline.init(initial))
    resumed = resumed_simulation.run([keep], params, state, round_index + 1)
    assert all(torch.equal(resumed[k], uninterrupted[k]) for k in uninterrupted)
    if compression == "topk":
        residual = state["client"]["compression"]
        cohorts = set().union(*(resumed_simulation.cohort(r).tolist() for r in (1, 2)))
        assert len(residual["clients"]) and set(residual["clients"].tolist()) <= cohorts
        assert residual["residual"]["head.weight"].shape == (len(residual["clients"]), 10, 8)
        assert residual["residual"]["head.weight"].abs().sum() > 0


def test_canaries_are_compressed_and_leave_no_residual():
    sim = simulation("aggregation.compression='topk'", "privacy.canaries=20", "server.rounds=2")
    logged = []
    sim.run([lambda r, params, state, metrics: logged.append((metrics, state))])
    assert sum(metrics["canaries"] for metrics, _ in logged) > 0
    assert all(metrics["clients"] == 10 for metrics, _ in logged)
    sampled = set().union(*(sim.cohort(r).tolist() for r in (1, 2)))
    assert sorted(logged[-1][1]["client"]["compression"]["clients"].tolist()) == sorted(sampled)


def round_metrics(*overrides: str) -> list[dict]:
    logged = []
    simulation(*overrides).run([lambda r, params, state, metrics: logged.append(metrics)])
    return logged


@pytest.mark.parametrize("overrides, up", [
    ([], 2600),  # 650 float32 values
    (["aggregation.compression='quantize-8bit'"], 650 + 6 * 8),  # a byte each + min, step
    # k = 48, 1, 6, 1, 8, 1 values of 4 bytes, indices of 2 bytes into the 480 weights and of
    # 1 byte into the others
    (["aggregation.compression='topk'", "aggregation.topk_fraction=0.1"],
     48 * 6 + 1 * 5 + 6 * 5 + 1 * 5 + 8 * 5 + 1 * 5),
])
def test_each_round_counts_the_bytes_of_its_clients(overrides, up):
    for metrics in round_metrics(*overrides):
        assert metrics["bytes_down"] == 10 * 2600
        assert metrics["bytes_up"] == metrics["clients"] * up
        assert type(metrics["bytes_up"]) is type(metrics["bytes_down"]) is int


def test_clients_that_drop_out_were_sent_the_model_and_send_nothing():
    logged = round_metrics("faults.dropout=0.5")
    assert any(metrics["dropped"] for metrics in logged)
    for metrics in logged:
        assert metrics["bytes_down"] == 10 * 2600
        assert metrics["bytes_up"] == metrics["clients"] * 2600


def test_secure_aggregation_counts_its_own_encoding():
    params = simulation().experiment.learner.init_params()
    ckks = load_config(None, SYNTHETIC + ["aggregation.secure='ckks'"])
    # 650 values fit one ciphertext of 4,096 slots: 2 polynomials x 8,192 x 2 primes x 8 bytes
    assert round_bytes(ckks, params, 10, 7) == {"bytes_down": 26_000, "bytes_up": 7 * 262_144}
    secagg = load_config(None, SYNTHETIC + ["aggregation.secure='secagg+'"])
    # the quantized weight and 650 values as int64
    assert round_bytes(secagg, params, 10, 7) == {"bytes_down": 26_000, "bytes_up": 7 * 651 * 8}


def test_ckks_ciphertexts_serialize_a_little_below_their_counted_size():
    keys = CkksKeys.generate(8192, 50)
    (serialized,) = encrypt(load_context(keys.secret), torch.randn(keys.slots) * 1e-3, keys.slots)
    assert 0.85 * ciphertext_bytes(8192, 50) < len(serialized) <= ciphertext_bytes(8192, 50)


def test_compression_with_secure_aggregation_is_refused():
    with pytest.raises(UserError, match="encodes the updates its own way"):
        load_config(None, ["aggregation.compression='topk'", "aggregation.secure='secagg+'"])
