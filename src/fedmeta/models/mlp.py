"""Multi-layer perceptron (ReLU) for feature vectors such as LEAF Synthetic, or flattened images."""

import math

import torch
from torch import nn


class MLP(nn.Module):
    """`in_shape` -> hidden ReLU layers -> `num_classes` logits (or the last hidden layer);
    with `batch_norm`, each hidden layer normalized before its ReLU by its batch's statistics
    (no running ones, as Conv-4's, so the model stays a function of its params)."""

    def __init__(self, in_shape: tuple[int, ...], hidden: tuple[int, ...] = (64,),
                 num_classes: int | None = None, batch_norm: bool = False) -> None:
        super().__init__()
        widths = (math.prod(in_shape), *hidden)
        layers: list[nn.Module] = [nn.Flatten()]
        for a, b in zip(widths[:-1], widths[1:]):
            layers.append(nn.Linear(a, b))
            if batch_norm:
                layers.append(nn.BatchNorm1d(b, track_running_stats=False))
            layers.append(nn.ReLU())
        self.features = nn.Sequential(*layers)
        self.embedding_dim = widths[-1]
        self.head = nn.Linear(self.embedding_dim, num_classes) if num_classes else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.features(x)
        return self.head(z) if self.head is not None else z
