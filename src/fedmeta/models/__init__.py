"""Backbones, plain `nn.Module`s called functionally through `torch.func.functional_call`."""

from torch import nn

from fedmeta.models.char_lstm import CharLSTM
from fedmeta.models.cnn import CNN
from fedmeta.models.conv4 import Conv4
from fedmeta.models.melu import MeLU
from fedmeta.models.mf import MatrixFactorization
from fedmeta.models.mlp import MLP

__all__ = ["CNN", "CharLSTM", "Conv4", "MLP", "MatrixFactorization", "MeLU", "build_model"]


def build_model(name: str, input_shape: tuple[int, ...], num_classes: int | None,
                hidden: int = 64, batch_norm: bool = False, items: int = 0,
                embedding: int = 32) -> nn.Module:
    """The backbone `name` ("conv4"; "mlp" or "cnn", with `batch_norm` or not; "char-lstm", which
    reads token ids [T] of a vocabulary as large as its `num_classes` outputs, next-token
    prediction; "melu" or "mf", a rating model of `items` items and `embedding`-wide
    embeddings, which ignores `num_classes`) for inputs of `input_shape` (no batch dim)."""
    if name == "conv4":
        if len(input_shape) != 3:
            raise ValueError(f"conv4 needs image inputs [C,H,W], got shape {input_shape}")
        return Conv4(input_shape[0], hidden, num_classes, image_size=input_shape[-1])
    if name == "cnn":
        if len(input_shape) != 3:
            raise ValueError(f"cnn needs image inputs [C,H,W], got shape {input_shape}")
        return CNN(input_shape[0], hidden, num_classes, input_shape[-1], batch_norm)
    if name == "mlp":
        return MLP(input_shape, (hidden, hidden), num_classes, batch_norm)
    if name == "char-lstm":
        if len(input_shape) != 1 or num_classes is None:
            raise ValueError(f"char-lstm needs token inputs [T] and a head over their "
                             f"vocabulary, got shape {input_shape} and {num_classes} outputs")
        return CharLSTM(num_classes, hidden, num_classes)
    if name in ("melu", "mf"):
        if len(input_shape) != 1 or input_shape[0] < 3 or items < 1:
            raise ValueError(f"{name} needs rated items' features [2 + genres] of a dataset "
                             f"with an item space (data.dataset = 'movielens'), got shape "
                             f"{input_shape} and {items} items")
        if name == "mf":
            return MatrixFactorization(items, embedding)
        return MeLU(input_shape[0] - 2, items, embedding, hidden)
    raise ValueError(f"unknown model {name!r} (expected conv4, cnn, mlp, char-lstm, melu or mf)")
