"""Prototypical Networks (Snell, Swersky, Zemel 2017, "Prototypical Networks for Few-shot
Learning"): a class is the mean embedding of its support examples; a query is scored by its
negative squared Euclidean distance to each prototype. Federated, the clients meta-learn the
embedding on their own classes and the server averages it.
"""

from typing import Any

import torch

from fedmeta.learners.base import Learner
from fedmeta.params import Params


def prototypes(embeddings: torch.Tensor, labels: torch.Tensor,
               ways: int | None = None) -> torch.Tensor:
    """Mean embedding per class 0..N-1: [N, D]. N = `ways`, or the largest label + 1 (which
    reads the labels' values, so under `vmap` `ways` must be given)."""
    ways = int(labels.max()) + 1 if ways is None else ways
    classes = torch.arange(ways, device=labels.device)
    one_hot = (labels.unsqueeze(-1) == classes).to(embeddings.dtype)
    return (one_hot.T @ embeddings) / one_hot.sum(0).unsqueeze(1)


def prototype_logits(queries: torch.Tensor, protos: torch.Tensor) -> torch.Tensor:
    """Negative squared Euclidean distance of each query to each prototype: [Q, ways]."""
    squared = (queries.pow(2).sum(1, keepdim=True) - 2 * queries @ protos.T
               + protos.pow(2).sum(1))
    return -squared


class ProtoNet(Learner):
    """Prototypical Networks over the model's embedding (the model has no classifier head)."""

    global_label_tasks = False  # a prototype per class of a static N-way episode

    def adapt(self, params: Params, support_x: torch.Tensor, support_y: torch.Tensor) -> Any:
        """Training episodes have the sampler's ways (a static class count, so cohorts vmap)."""
        return prototypes(self.forward(params, support_x), support_y, self.sampler.ways)

    def eval_adapt(self, params: Params, support_x: torch.Tensor,
                   support_y: torch.Tensor) -> Any:
        return prototypes(self.forward(params, support_x), support_y)

    def query_logits(self, params: Params, state: Any, query_x: torch.Tensor) -> torch.Tensor:
        return prototype_logits(self.forward(params, query_x), state)
