"""`run.device` on a machine without a GPU: its names resolve or fail in one line, batches and
episodes move whole, checkpoints hold host tensors and restore onto the run's device, and
every server stage keeps to the device of the updates it is given. The same checks on a GPU
are tests/test_gpu.py's.

A second device is stood in for by PyTorch's `meta` device (shapes, no values): an operation
that mixes it with a CPU tensor raises as one mixing CUDA and CPU does, so a stage that creates
a tensor on the host where the updates are elsewhere fails here too."""

import json

import pytest
import torch

from fedmeta.build import LEARNERS, build_experiment, build_pipeline
from fedmeta.cli import main
from fedmeta.config import Config, load_config
from fedmeta.data import Episodes, NotEnoughData
from fedmeta.device import HOST, describe_device, resolve_device, to_device
from fedmeta.engine.checkpoint import read_checkpoint, restore_read, save_checkpoint
from fedmeta.engine.simulation import Simulation
from fedmeta.errors import UserError
from fedmeta.learners.scaffold import model_part
from fedmeta.server.chain import Round

META = torch.device("meta")


def without_cuda(monkeypatch, count: int = 0) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)


def test_auto_is_the_cpu_without_a_gpu(monkeypatch):
    without_cuda(monkeypatch)
    assert resolve_device("auto") == HOST and resolve_device("cpu") == HOST
    assert describe_device(HOST).startswith("cpu (") and "thread" in describe_device(HOST)


@pytest.mark.parametrize("name, count, says", [("cuda", 0, "has no CUDA GPU"),
                                                ("cuda:1", 0, "has no CUDA GPU"),
                                                ("cuda:2", 2, "cuda:0..cuda:1")])
def test_a_gpu_the_machine_lacks_is_one_line(monkeypatch, name, count, says):
    without_cuda(monkeypatch, count)
    with pytest.raises(UserError, match=says) as error:
        resolve_device(name)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("name", ["gpu", "cuda:x", "CUDA", "cpu:0 ", ""])
def test_config_refuses_other_names(name):
    with pytest.raises(UserError, match="run.device"):
        load_config(None, [f"run.device='{name}'"])


def test_cli_refuses_a_missing_gpu_before_the_run_directory(monkeypatch, tmp_path, capsys):
    without_cuda(monkeypatch)
    config = tmp_path / "c.toml"
    config.write_text('[data]\ndataset = "synthetic"\nnum_clients = 4\n[model]\nname = "mlp"\n')
    assert main(["run", str(config), "--set", "run.device='cuda'", "--out",
                 str(tmp_path / "run"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "has no CUDA GPU" in err
    assert not (tmp_path / "run").exists()
    assert main(["run", str(config), "--device", "cpu"]) == 2  # --device is --resume's


def test_to_device_moves_every_tensor_and_keeps_the_structure():
    x = torch.zeros(2, 3)
    batch = ([x, (x, {"noise": x})], Episodes(x[None], x[None].long(), x[None], x[None].long()),
             "label", 3)
    moved = to_device(batch, META)
    assert moved[0][0].device == META and moved[0][1][1]["noise"].device == META
    assert isinstance(moved[1], Episodes) and moved[1].query_y.dtype == torch.int64
    assert moved[1].support_x.device == META and moved[2:] == ("label", 3)
    assert to_device(x, HOST) is x  # already there: not copied


def test_checkpoints_hold_host_tensors_and_restore_onto_the_run_device(tmp_path):
    params = {"w": torch.arange(6.0).view(2, 3)}
    state = {"mean": {"count": torch.tensor(3)}, "clients": {"w": torch.ones(4, 2, 3)}}
    path = tmp_path / "c.safetensors"
    save_checkpoint(path, params, state, 3, (2, params, state["clients"]))
    read = read_checkpoint(path)
    assert all(t.device == HOST for t in read[0].values())
    on_meta = {"w": torch.empty(2, 3, device=META)}
    like = {"mean": {"count": torch.tensor(0)}, "clients": {"w": torch.empty(4, 2, 3,
                                                                               device=META)}}
    restored, server, round_index = restore_read(read, path, on_meta, like)
    assert round_index == 3 and restored["w"].device == META
    assert server["clients"]["w"].device == META and server["mean"]["count"].device == HOST


PIPELINES = {  # stages that create tensors of their own: noise, counts, rows, residuals
    "mean": {},
    "user-level DP, adaptive clipping": {"privacy": {
        "clip_norm": 1.0, "noise_multiplier": 1.0, "adaptive_clipping": True,
        "clip_count_noise": 2.0}},
    "quantized, norm bound, adam": {"aggregation": {"compression": "quantize-8bit",
                                                    "norm_bound": 0.5},
                                    "server": {"optimizer": "adam", "lr": 0.1}},
    "top-k error feedback": {"aggregation": {"compression": "topk", "topk_fraction": 0.5}},
    "secagg+ fixed point": {"aggregation": {"secure": "secagg+"}},
    "trimmed mean": {"aggregation": {"rule": "trimmed-mean", "byzantine_fraction": 0.25}},
}


@pytest.mark.parametrize("case", PIPELINES)
def test_server_stages_keep_to_the_updates_device(case):
    """The pipeline of each configuration on updates on another device (meta) with the ids on
    the host, as the simulation hands them over: no stage mixes devices, and what it returns
    is on the updates' device."""
    config = Config.model_validate({"data": {"dataset": "synthetic", "num_clients": 8},
                                    "server": {"clients_per_round": 4}, **PIPELINES[case]})
    pipeline = build_pipeline(config, 8)
    params = {"w": torch.zeros(3, 2, device=META), "b": torch.zeros(2, device=META)}
    rows = Round({k: torch.empty(4, *v.shape, device=META) for k, v in params.items()},
                 torch.ones(4, device=META), clients=torch.tensor([0, 3, 5, 6]))
    try:
        rnd, state = pipeline.apply(rows, pipeline.init(params))
    except NotImplementedError as error:  # a value the meta device cannot give
        pytest.skip(f"{case} reads values: {error}")
    assert all(v.device == META for v in rnd.deltas.values())
    assert json.dumps(sorted(rnd.deltas)) == json.dumps(sorted(params))


@pytest.mark.parametrize("algorithm", sorted(LEARNERS))
def test_local_gradient_keeps_to_the_learners_device(algorithm):
    """Each learner's local gradient, its model, params and batch moved to another device
    (meta): nothing in its loss creates a tensor on the host."""
    config = Config.model_validate({
        "data": {"dataset": "synthetic", "num_clients": 20}, "model": {
            "name": "mlp", "hidden": 4, "batch_norm": algorithm == "fedbn"},
        "task": {"ways": 3, "shots": 2, "queries": 3}, "eval": {"ways": 3, "shots": 2},
        "learner": {"algorithm": algorithm, "optimizer": "sgd"},
        "server": {"optimizer": "sgd", "lr": 1.0}})
    experiment = build_experiment(config)
    learner = experiment.learner.to(META)
    sent = learner.client_params(learner.init_params(), torch.tensor([0]))  # what client 0 gets
    params = {k: v[0] for k, v in sent.items()}
    if algorithm == "scaffold":  # its local steps are on the model, its control apart
        params = model_part(params)
    train = experiment.train
    rounds = (supplied(learner, train.client(c)) for c in range(train.num_clients))
    batch = learner.on_device(next(batches for batches in rounds if batches))[0]  # the first
    grads, loss = learner.local_gradient(params, batch)
    assert loss.device == META and {v.device for v in grads.values()} == {META}


def supplied(learner, client) -> list | None:
    """The client's batches of a local round (None: too little data)."""
    try:
        return learner.local_batches(client, torch.Generator().manual_seed(0))
    except NotEnoughData:
        return None


def test_a_run_names_its_device_and_resumes_and_evaluates_on_a_named_one(tmp_path, capsys):
    config = tmp_path / "c.toml"
    config.write_text('[data]\ndataset = "omniglot"\npath = "bundled"\n[model]\nhidden = 8\n'
                      '[task]\nways = 5\nqueries = 3\n'
                      '[server]\nrounds = 2\nclients_per_round = 2\n'
                      '[eval]\nevery = 1\nepisodes = 10\nfinal_episodes = 20\n'
                      '[run]\ncheckpoint_every = 1\ndevice = "cpu"\n')
    run = tmp_path / "run"
    assert main(["run", str(config), "--out", str(run), "--quiet"]) == 0
    assert "trained on cpu (" in capsys.readouterr().out
    summary = json.loads((run / "summary.json").read_text())
    assert summary["device"] == describe_device(HOST)
    assert main(["eval", str(run), "--device", "cpu", "--json"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["accuracy"] == summary["meta_test"]["accuracy"]  # same device, same bits
    (run / "summary.json").unlink()
    (run / "checkpoints" / "round_00002.safetensors").unlink()
    assert main(["run", "--resume", str(run), "--device", "cpu", "--quiet"]) == 0
    assert json.loads((run / "summary.json").read_text())["meta_test"] == summary["meta_test"]


def test_bf16_local_steps_round_near_fp32_and_differ_from_it():
    """run.precision = "bf16" (autocast, on the CPU here): FedAvg's round on an MLP within
    bfloat16's rounding of float32's, and not equal to it (autocast did run); params stay
    float32. (Conv-4 with batch norm moves 10-70% away per round on the CPU: gpu_check.sh
    measures what bf16 does to accuracy and speed on a GPU.)"""
    updates = {}
    for precision in ("fp32", "bf16"):
        config = Config.model_validate({
            "data": {"dataset": "synthetic", "num_clients": 10}, "model": {"name": "mlp"},
            "task": {"ways": 3, "shots": 2, "queries": 3}, "eval": {"ways": 3, "shots": 2},
            "learner": {"algorithm": "fedavg", "optimizer": "sgd", "lr": 0.1},
            "server": {"clients_per_round": 2}, "run": {"precision": precision}})
        simulation = Simulation(build_experiment(config))
        params = simulation.experiment.learner.init_params()
        updates[precision], _, _ = simulation.reports(1, params)
    fp32, bf16 = updates["fp32"].deltas, updates["bf16"].deltas
    assert all(v.dtype == torch.float32 for v in bf16.values())
    error = sum(float((bf16[k] - fp32[k]).square().sum()) for k in fp32) ** 0.5
    norm = sum(float(v.square().sum()) for v in fp32.values()) ** 0.5
    assert 0 < error < 0.05 * norm  # bfloat16 keeps 8 bits of mantissa
