"""Where a run computes (`run.device`), and moving a batch there.

What is on the device: params, every server stage's state, the clients' personal states,
local optimizer states, the cohort's batches and evaluation's episodes. What stays on the
host: the datasets (compact, uint8 where they can be) and every random draw. Each draw comes
from a CPU generator seeded by its keys (`fedmeta.seeding`) and moves to the device after it
is drawn, so the same config samples the same cohorts, episodes, dropouts, attacks and noise
on any device; only float rounding differs between devices.
"""

import contextlib
import dataclasses
import platform
from typing import Any

import torch

from fedmeta.errors import UserError


HOST = torch.device("cpu")  # where data, random draws, checkpoints and messages live


def resolve_device(name: str) -> torch.device:
    """The device `run.device` names: "auto" (CUDA when available, else the CPU), "cpu",
    "cuda" or "cuda:N". UserError for a GPU this machine does not have."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if not count:
            raise UserError(f"run.device = {name!r}, and this machine has no CUDA GPU that "
                            f"torch {torch.__version__} can use: set run.device = \"cpu\" "
                            "(or \"auto\")")
        if (device.index or 0) >= count:
            raise UserError(f"run.device = {name!r}, and this machine has {count} CUDA "
                            f"GPU(s): cuda:0..cuda:{count - 1}")
    return device


def describe_device(device: torch.device) -> str:
    """The device in words, as results report it: "cpu (its model, N threads)" or
    "cuda:0 (NVIDIA H200)"."""
    if device.type == "cpu":
        threads = torch.get_num_threads()
        return f"cpu ({cpu_model()}, {threads} thread{'s' if threads > 1 else ''})"
    if device.type != "cuda":
        return device.type
    index = device.index if device.index is not None else torch.cuda.current_device()
    return f"cuda:{index} ({torch.cuda.get_device_name(index)})"


def cpu_model() -> str:
    """The CPU's model name (Linux's /proc/cpuinfo), else the platform's word for it."""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def local_precision(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """Where a client's local steps run in `run.precision`: "bf16" runs autocast's eligible
    ops (matrix products, convolutions) in bfloat16 on `device`, the params, their gradients
    and the optimizer staying float32; "fp32" changes nothing."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def synchronize() -> None:
    """Wait for the GPU's queued work (a timer's reading is the work's, not its launch's);
    nothing on the CPU."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def to_device(batch: Any, device: torch.device) -> Any:
    """`batch` (a tensor, or tuples, lists, dicts or dataclasses of them, or other leaves,
    left as they are) with every tensor on `device`: the same object when it is there."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    if dataclasses.is_dataclass(batch) and not isinstance(batch, type):
        return dataclasses.replace(batch, **{f.name: to_device(getattr(batch, f.name), device)
                                             for f in dataclasses.fields(batch) if f.init})
    return batch
