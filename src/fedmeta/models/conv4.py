"""Conv-4: the few-shot backbone of Vinyals et al. 2016, used by MAML (Finn et al. 2017) and
Prototypical Networks (Snell et al. 2017).

Four blocks of 3x3 conv (64 channels), batch norm, ReLU and 2x2 max-pool. Batch norm keeps no
running statistics, so the model is a pure function of its parameters (transductive batch
statistics, as in MAML's reference implementation).
"""

import torch
from torch import nn


def conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1),
        nn.BatchNorm2d(out_channels, track_running_stats=False),
        nn.ReLU(),
        nn.MaxPool2d(2),
    )


class Conv4(nn.Module):
    """Conv-4 embedding, optionally followed by a linear head of `num_classes` outputs."""

    def __init__(self, in_channels: int = 1, hidden: int = 64, num_classes: int | None = None,
                 image_size: int = 28) -> None:
        super().__init__()
        self.features = nn.Sequential(*(conv_block(in_channels if i == 0 else hidden, hidden)
                                        for i in range(4)))
        side = image_size
        for _ in range(4):
            side //= 2
        self.embedding_dim = hidden * side * side
        self.head = nn.Linear(self.embedding_dim, num_classes) if num_classes else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.features(x).flatten(1)
        return self.head(z) if self.head is not None else z
