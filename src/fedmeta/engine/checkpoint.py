"""Checkpoints as safetensors (no pickle): the global params and the server pipeline's state,
flattened to `params/<name>` and `server/<stage>/<...>` keys, written atomically."""

import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from fedmeta.errors import UserError
from fedmeta.params import Params


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, torch.Tensor]:
    flat: dict[str, torch.Tensor] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, name + "/"))
        else:
            flat[name] = value.detach().contiguous()
    return flat


def unflatten(flat: dict[str, torch.Tensor]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for name, value in flat.items():
        *parents, leaf = name.split("/")
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"{name} lies inside the tensor {part}")
        node[leaf] = value
    return tree


def save_checkpoint(path: Path, params: Params, server_state: dict[str, Any],
                    round_index: int) -> None:
    """Write params and server state to `path` (temporary file, then rename)."""
    tensors = flatten({"params": params, "server": server_state})
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata={"round": str(round_index)})
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> tuple[Params, dict[str, Any], int]:
    """(params, server state, round) from a checkpoint written by `save_checkpoint`."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            tree = unflatten({name: handle.get_tensor(name) for name in handle.keys()})
            round_index = int(handle.metadata()["round"])
    except (OSError, SafetensorError, KeyError, TypeError, ValueError) as error:
        raise UserError(f"cannot read checkpoint {path}: {error}") from None
    if not isinstance(tree.get("params"), dict):
        raise UserError(f"cannot read checkpoint {path}: no params/ tensors")
    return tree["params"], tree.get("server", {}), round_index


def check_params(path: Path, params: Params, model: Params) -> None:
    """UserError unless a checkpoint's `params` have the names, shapes and dtypes of `model`'s
    (a checkpoint of another config)."""
    for name in sorted(params.keys() | model.keys()):
        found, expected = describe(params.get(name)), describe(model.get(name))
        if found != expected:
            raise UserError(f"checkpoint {path} does not fit the run's model: params/{name} is "
                            f"{found} there, the config builds {expected}")


def describe(value: Any) -> str:
    if not isinstance(value, torch.Tensor):
        return "missing" if value is None else "a group of tensors"
    return f"{str(value.dtype).removeprefix('torch.')} {list(value.shape)}"
