"""Matrix factorization with biases (Koren, Bell, Volinsky 2009, "Matrix Factorization
Techniques for Recommender Systems", Eq. 4) as federated collaborative filtering splits it
(Ammad-ud-din et al. 2019, "Federated Collaborative Filtering for Privacy-Preserving
Personalized Recommendation System"): a rating is

    global bias + item bias + user bias + <user vector, item embedding>.

The item side (`bias`, `item_bias.weight`, `item.weight`) is shared by all users and
aggregated by the server; the user side (`user.vector`, `user.bias`) is one user's, the
params the model declares `personal`: a learner that keeps local layers
(`fedmeta.learners.local_layers`) fits them on the client's own ratings and never sends them.
They start at zero, so a user with no ratings yet is predicted by the item side alone.
"""

import torch
import torch.nn.functional as F
from torch import nn

from fedmeta.data.movielens import MAX_RATING, MIN_RATING


class MatrixFactorization(nn.Module):
    """x float32 [n, ...] whose column 0 is the rated movie's index (`fedmeta.data.movielens
    .item_features`; the other columns are unused) -> predicted ratings [n]."""

    regression = True  # outputs are ratings, scored by squared error (`Learner.criterion`)
    personal = ("user.",)  # param-name prefixes that stay on the client

    def __init__(self, items: int, embedding: int = 32) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.full((1,), (MIN_RATING + MAX_RATING) / 2))
        self.item_bias = nn.Embedding(items, 1)
        self.item = nn.Embedding(items, embedding)
        nn.init.zeros_(self.item_bias.weight)
        nn.init.normal_(self.item.weight, std=0.1)
        self.user = nn.ParameterDict({"vector": nn.Parameter(torch.zeros(embedding)),
                                      "bias": nn.Parameter(torch.zeros(1))})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        items = x[:, 0].long()
        item_bias = F.embedding(items, self.item_bias.weight).squeeze(-1)
        affinity = F.embedding(items, self.item.weight) @ self.user["vector"]
        return self.bias + item_bias + self.user["bias"] + affinity
