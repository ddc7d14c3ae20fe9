"""The CNN of FedAvg (McMahan et al. 2017) in the shape PFLlib's label-skew benchmark trains
it: two 5x5 convolutions (32 and 64 channels, no padding), each followed by ReLU and 2x2
max-pooling, a fully connected layer of `hidden` ReLU units (512 there) and a linear head.

PFLlib's has no batch norm; with `batch_norm`, each convolution is normalized before its ReLU
by its batch's statistics (no running ones, as Conv-4's), so that FedBN has norms to keep."""

import torch
from torch import nn


def conv_block(in_channels: int, out_channels: int, batch_norm: bool) -> nn.Sequential:
    norm = [nn.BatchNorm2d(out_channels, track_running_stats=False)] if batch_norm else []
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel_size=5), *norm, nn.ReLU(),
                         nn.MaxPool2d(2))


class CNN(nn.Module):
    """`in_channels` x `image_size`^2 images -> 512 (`hidden`) features -> `num_classes` logits
    (or the features)."""

    def __init__(self, in_channels: int = 1, hidden: int = 512, num_classes: int | None = None,
                 image_size: int = 28, batch_norm: bool = False) -> None:
        super().__init__()
        side = ((image_size - 4) // 2 - 4) // 2
        if side < 1:
            raise ValueError(f"cnn needs images of at least 16 pixels a side, got {image_size}")
        self.features = nn.Sequential(conv_block(in_channels, 32, batch_norm),
                                      conv_block(32, 64, batch_norm), nn.Flatten(),
                                      nn.Linear(64 * side * side, hidden), nn.ReLU())
        self.embedding_dim = hidden
        self.head = nn.Linear(hidden, num_classes) if num_classes else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.features(x)
        return self.head(z) if self.head is not None else z
