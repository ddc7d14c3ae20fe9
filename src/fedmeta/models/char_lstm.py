"""LEAF's character model for Shakespeare (Caldas et al. 2018, arXiv:1812.01097, after McMahan
et al. 2017): each character embedded in 8 dimensions, two LSTM layers (Hochreiter and
Schmidhuber 1997) of 256 units, and a linear layer from the last step's output to the
vocabulary.

The LSTM is written step by step in plain tensor ops, not `nn.LSTM`'s fused kernel, so that
it is a pure function of its params that `torch.func` vmaps over clients and differentiates
twice (second-order MAML) on any device: cuDNN's fused LSTM has no double backward.
"""

import math

import torch
from torch import nn

EMBEDDING = 8  # LEAF's
LAYERS = 2


class LSTMLayer(nn.Module):
    """[B, T, in] -> [B, T, hidden]; gates (input, forget, cell, output) from one matmul of
    the inputs (all steps at once) and one of the state per step; zero initial state."""

    def __init__(self, in_features: int, hidden: int) -> None:
        super().__init__()
        self.hidden = hidden
        self.ih = nn.Linear(in_features, 4 * hidden)
        self.hh = nn.Linear(hidden, 4 * hidden, bias=False)
        bound = 1 / math.sqrt(hidden)  # nn.LSTM's initialization
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gates_x = self.ih(x)
        h = c = x.new_zeros(x.shape[0], self.hidden)
        outputs = []
        for t in range(x.shape[1]):
            i, f, g, o = (gates_x[:, t] + self.hh(h)).chunk(4, -1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            outputs.append(h)
        return torch.stack(outputs, 1)


class CharEncoder(nn.Module):
    """Token ids int64 [B, T] -> the last LSTM layer's output at the last step [B, hidden]."""

    def __init__(self, vocab_size: int, hidden: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, EMBEDDING)
        self.lstm = nn.Sequential(*(LSTMLayer(EMBEDDING if i == 0 else hidden, hidden)
                                    for i in range(LAYERS)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lstm(self.embedding(x))[:, -1]


class CharLSTM(nn.Module):
    """The encoder, then a linear head of `num_classes` outputs (None: the encoder alone)."""

    def __init__(self, vocab_size: int, hidden: int = 256, num_classes: int | None = None) -> None:
        super().__init__()
        self.features = CharEncoder(vocab_size, hidden)
        self.embedding_dim = hidden
        self.head = nn.Linear(hidden, num_classes) if num_classes else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.features(x)
        return self.head(z) if self.head is not None else z
