"""`run.device = "cuda"` against the CPU, on a machine with a GPU (skipped elsewhere; run by
benchmarks/gpu_check.sh): the same config draws the same cohorts, episodes, dropouts, attacks
and noise on both devices, so rounds agree up to float rounding; a checkpoint written on one
device resumes on the other."""

import json
import shutil

import pytest
import tomli_w
import torch

from fedmeta.build import build_experiment
from fedmeta.cli import main
from fedmeta.config import Config
from fedmeta.engine.simulation import Simulation

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

SYNTHETIC = {"data": {"dataset": "synthetic", "num_clients": 30},
             "model": {"name": "mlp", "hidden": 16}, "task": {"ways": 3, "shots": 2,
                                                              "queries": 3},
             "eval": {"ways": 3, "shots": 2, "queries": 3, "episodes": 20},
             "server": {"clients_per_round": 6, "rounds": 3}}
OMNIGLOT = {"data": {"dataset": "omniglot", "path": "bundled"}, "model": {"hidden": 8},
            "task": {"ways": 5, "shots": 1, "queries": 3},
            "eval": {"episodes": 20, "final_episodes": 50},
            "server": {"clients_per_round": 3, "rounds": 3}}
CASES = {
    "fedavg (vmap)": {**SYNTHETIC, "learner": {"algorithm": "fedavg", "local_steps": 3}},
    "fedavg-ft, sample-level DP": {**SYNTHETIC, "learner": {"algorithm": "fedavg-ft"},
                                   "privacy": {"sample_clip_norm": 1.0,
                                               "sample_noise_multiplier": 0.5}},
    "scaffold (personal state)": {**SYNTHETIC, "learner": {"algorithm": "scaffold",
                                                           "optimizer": "sgd"},
                                  "server": {**SYNTHETIC["server"], "optimizer": "sgd",
                                             "lr": 1.0}},
    "user-level DP, adaptive clipping, canaries": {
        **SYNTHETIC, "learner": {"algorithm": "fedavg"},
        "privacy": {"clip_norm": 0.5, "noise_multiplier": 1.0, "adaptive_clipping": True,
                    "clip_count_noise": 2.0, "canaries": 4}},
    "top-k, gaussian attack, dropouts, median": {
        **SYNTHETIC, "learner": {"algorithm": "fedavg"},
        "aggregation": {"compression": "topk", "topk_fraction": 0.3, "rule": "median"},
        "attack": {"kind": "gaussian", "fraction": 0.2},
        "faults": {"dropout": 0.2}},
    "protonet conv-4": {**OMNIGLOT, "learner": {"algorithm": "protonet"}},
    "maml conv-4": {**OMNIGLOT, "learner": {"algorithm": "maml", "inner_lr": 0.1}},
    "pfedhn": {**OMNIGLOT, "learner": {"algorithm": "pfedhn"}},
}


def rounds(config: dict, device: str) -> tuple[list[dict], dict[str, torch.Tensor]]:
    """Each round's metrics (timings left out) and the final params, on the host."""
    config = Config.model_validate({**config, "run": {"device": device}})
    simulation = Simulation(build_experiment(config))
    logged = []
    params = simulation.run([lambda r, p, s, m: logged.append(
        {k: v for k, v in m.items() if k != "seconds"})])
    return logged, {k: v.cpu() for k, v in params.items()}


@pytest.mark.parametrize("case", CASES)
def test_gpu_rounds_are_the_cpus(case):
    cpu_metrics, cpu_params = rounds(CASES[case], "cpu")
    gpu_metrics, gpu_params = rounds(CASES[case], "cuda")
    for cpu, gpu in zip(cpu_metrics, gpu_metrics, strict=True):
        assert {k: v for k, v in cpu.items() if isinstance(v, (int, str, dict))} == {
            k: v for k, v in gpu.items() if isinstance(v, (int, str, dict))}  # who, and why
        for key, value in cpu.items():
            if isinstance(value, float):
                assert gpu[key] == pytest.approx(value, rel=2e-3, abs=2e-3), key
    for key, value in cpu_params.items():
        torch.testing.assert_close(gpu_params[key], value, rtol=1e-3, atol=1e-3)


def test_a_gpu_checkpoint_resumes_on_the_cpu(tmp_path):
    """A run on the GPU, cut back to its round-2 checkpoint and resumed on the CPU, ends as
    the run did (to float rounding)."""
    config = tmp_path / "c.toml"
    config.write_text(tomli_w.dumps({**OMNIGLOT, "learner": {"algorithm": "protonet"},
                                     "server": {**OMNIGLOT["server"], "rounds": 4},
                                     "run": {"checkpoint_every": 1, "device": "cuda"}}))
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    assert main(["run", str(config), "--out", str(whole), "--quiet"]) == 0
    shutil.copytree(whole, cut)
    (cut / "summary.json").unlink()
    for later in ("round_00003", "round_00004"):
        (cut / "checkpoints" / f"{later}.safetensors").unlink()
    assert main(["run", "--resume", str(cut), "--device", "cpu", "--quiet"]) == 0
    done, resumed = (json.loads((run / "summary.json").read_text()) for run in (whole, cut))
    assert done["device"].startswith("cuda") and resumed["device"].startswith("cpu (")
    assert resumed["meta_test"]["accuracy"] == pytest.approx(done["meta_test"]["accuracy"],
                                                             abs=0.02)
