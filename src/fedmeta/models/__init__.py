"""Backbones, plain `nn.Module`s called functionally through `torch.func.functional_call`."""

from torch import nn

from fedmeta.models.conv4 import Conv4
from fedmeta.models.mlp import MLP

__all__ = ["Conv4", "MLP", "build_model"]


def build_model(name: str, input_shape: tuple[int, ...], num_classes: int | None,
                hidden: int = 64, batch_norm: bool = False) -> nn.Module:
    """The backbone `name` ("conv4" or "mlp", with `batch_norm` or not) for inputs of
    `input_shape` (no batch dim)."""
    if name == "conv4":
        if len(input_shape) != 3:
            raise ValueError(f"conv4 needs image inputs [C,H,W], got shape {input_shape}")
        return Conv4(input_shape[0], hidden, num_classes, image_size=input_shape[-1])
    if name == "mlp":
        return MLP(input_shape, (hidden, hidden), num_classes, batch_norm)
    raise ValueError(f"unknown model {name!r} (expected conv4 or mlp)")
