"""Checkpoints as safetensors (no pickle): the global params and the server pipeline's state,
flattened to `params/<name>` and `server/<stage>/<...>` keys (the clients' personal states, if
the learner keeps them, under `server/clients/`), and the params of the round model selection
has chosen so far (`selected/<name>`, its round in the metadata; its personal states under
`selected_clients/`), written atomically. Holding the selection in every checkpoint makes a
resumed run choose as the uninterrupted one would have."""

from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from fedmeta.atomic import atomic_path
from fedmeta.engine.client_state import CLIENTS
from fedmeta.errors import UserError
from fedmeta.params import Params, owned
from fedmeta.server.chain import positional


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


Selected = tuple[int, Params, Params | None]  # round, params, the clients' personal states


def save_checkpoint(path: Path, params: Params, server_state: dict[str, Any],
                    round_index: int, selected: Selected | None = None) -> None:
    """Write params, server state and the `selected` (round, params, personal states) to
    `path` (temporary file, then rename)."""
    tree, metadata = {"params": params, "server": server_state}, {"round": str(round_index)}
    if selected is not None:
        metadata["selected_round"] = str(selected[0])
        # copies: the selected round may be this one, and safetensors refuses shared memory
        tree["selected"] = {k: v.clone() for k, v in selected[1].items()}
        if selected[2] is not None:
            tree["selected_clients"] = {k: v.clone() for k, v in selected[2].items()}
    with atomic_path(path) as tmp:
        save_file({name: value.cpu() for name, value in flatten(tree).items()}, str(tmp),
                  metadata=metadata)  # host tensors: any device reads them


def read_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], int, int]:
    """The flattened tensors (each in memory of its own: `owned`), the round and the selected
    round (0: none) of a checkpoint written by `save_checkpoint`."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            tensors = {name: owned(handle.get_tensor(name)) for name in handle.keys()}
            metadata = handle.metadata()
            return (tensors, int(metadata["round"]), int(metadata.get("selected_round", 0)))
    except (OSError, SafetensorError, KeyError, TypeError, ValueError) as error:
        raise UserError(f"cannot read checkpoint {path}: {error}") from None


def load_checkpoint(path: Path) -> tuple[Params, dict[str, Any], int]:
    """(params, server state, round) from a checkpoint written by `save_checkpoint`; the
    state lacks the stages that keep none (see `restore_checkpoint`)."""
    tensors, round_index, _ = read_checkpoint(path)
    try:
        tree = unflatten(tensors)
    except ValueError as error:  # a name that is both a tensor and a group
        raise UserError(f"cannot read checkpoint {path}: {error}") from None
    if not isinstance(tree.get("params"), dict):
        raise UserError(f"cannot read checkpoint {path}: no params/ tensors")
    return tree["params"], tree.get("server", {}), round_index


def restore_checkpoint(path: Path, params: Params,
                       server_state: dict[str, Any]) -> tuple[Params, dict[str, Any], int]:
    """(params, server state, round) from the checkpoint at `path`, in the structure of
    `params` and `server_state` (a new run's: flattening drops the empty state of a stateless
    stage, so the checkpoint alone cannot rebuild it). UserError if the checkpoint's tensors
    differ from theirs in names, shapes or dtypes (a config edited since it was written); a
    state tensor that starts empty along its first dimension grows as the run goes (rows per
    client, as error feedback's residuals), so only its other dimensions must agree. The
    selected params are `restore_selected`'s."""
    return restore_read(read_checkpoint(path), path, params, server_state)


def restore_read(read: tuple[dict[str, torch.Tensor], int, int], path: Path, params: Params,
                 server_state: dict[str, Any]) -> tuple[Params, dict[str, Any], int]:
    """`restore_checkpoint` of what `read_checkpoint(path)` returned (`read`)."""
    tensors, round_index, _ = read
    tree = {"params": params, "server": server_state}
    like = flatten(tree)
    # a checkpoint written before chains named their stages holds them by position
    named = dict(zip(flatten(positional(tree)), like))
    tensors = {name if name in like else named.get(name, name): value
               for name, value in tensors.items() if not name.startswith("selected")}
    grows = {name for name, value in like.items() if value.dim() and not len(value)}
    expected = {name: describe(value, name in grows) for name, value in like.items()}
    found = {name: describe(value, name in grows) for name, value in tensors.items()}
    for name in sorted(expected.keys() | found.keys()):
        if expected.get(name) != found.get(name):
            raise UserError(f"checkpoint {path} does not match its run's config: {name} is "
                            f"{found.get(name, 'missing')} there, the config builds "
                            f"{expected.get(name, 'no such tensor')}")
    tree = fill(tree, tensors)
    return tree["params"], tree["server"], round_index


def restore_selected(read: tuple[dict[str, torch.Tensor], int, int], path: Path,
                     params: Params, server_state: dict[str, Any]) -> Selected | None:
    """The round model selection had chosen when the checkpoint at `path` was written, its
    params in the structure of `params` and its clients' personal states in that of
    `server_state`'s (None: nothing chosen yet), from what `read_checkpoint(path)` returned
    (`read`). UserError if they differ from those in names, shapes or dtypes."""
    tensors, _, selected_round = read
    if not selected_round:
        return None
    found = [{k.removeprefix(prefix): v for k, v in tensors.items() if k.startswith(prefix)}
             for prefix in ("selected/", "selected_clients/")]
    for (group, like), tree in zip((("selected", params),
                                    ("selected_clients", server_state.get(CLIENTS, {}))), found):
        if {k: describe(v) for k, v in tree.items()} != {k: describe(v) for k, v in like.items()}:
            raise UserError(f"checkpoint {path} does not match its run's config: its {group}/ "
                            f"tensors are not the run's")
    params_found, states_found = (fill(like, tree) for like, tree in
                                  zip((params, server_state.get(CLIENTS, {})), found))
    return selected_round, params_found, states_found if CLIENTS in server_state else None


def describe(tensor: torch.Tensor, grows: bool = False) -> str:
    """dtype and shape; a first dimension that `grows` as *."""
    shape = [str(n) for n in tensor.shape]
    if grows and shape:
        shape[0] = "*"
    return f"{str(tensor.dtype).removeprefix('torch.')} [{', '.join(shape)}]"


def fill(tree: dict[str, Any], flat: dict[str, torch.Tensor], prefix: str = "") -> dict[str, Any]:
    """`tree` with each tensor replaced by the one `flatten` names as it in `flat`, on the
    replaced tensor's device (a run resumes on its own device, whichever wrote the file)."""
    return {key: fill(value, flat, f"{prefix}{key}/") if isinstance(value, dict)
            else flat[f"{prefix}{key}"].to(value.device) for key, value in tree.items()}
