"""Per-FedAvg (Fallah, Mokhtari, Ozdaglar 2020, "Personalized Federated Learning with
Theoretical Guarantees: A Model-Agnostic Meta-Learning Approach"), Algorithm 1.

Each local step on a client's episode takes one inner step `w' = w - alpha grad f(w; D)` on the
support set D (alpha = `inner_lr`) and estimates the MAML gradient at the query set D':

- FO (`perfedavg-fo`): `grad f(w'; D')`, the Hessian term dropped;
- HF (`perfedavg-hf`): `grad f(w'; D') - alpha H(w; D'') grad f(w'; D')`, with the Hessian-vector
  product computed exactly by double backward (`torch.func.vjp` of `torch.func.grad`) on a third
  batch D''. D' and D'' are two disjoint halves of each class's query examples, so the HF
  variant samples episodes with twice `task.queries` query examples per class.

The local optimizer (`learner.optimizer`, `learner.lr` = beta) applies the estimate. Training
uses the paper's single inner step; meta-testing fine-tunes on the support set for
`eval_inner_steps` steps, as MAML does.
"""

from collections.abc import Callable

import torch
from torch import nn
from torch.func import grad, grad_and_value, vjp

from fedmeta.data import EpisodeSampler
from fedmeta.learners.maml import MAML
from fedmeta.optim import Transform
from fedmeta.params import Params, tree_map


def hessian_vector_product(loss: Callable[[Params], torch.Tensor], params: Params,
                           vector: Params) -> Params:
    """H v, H the Hessian of `loss` at `params` (symmetric, so the VJP of the gradient)."""
    _, vjp_fn = vjp(grad(loss), params)
    return vjp_fn(vector)[0]


def halves(x: torch.Tensor, ways: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Split a class-major set of `ways` classes into two per-class halves."""
    per_class = x.reshape(ways, -1, *x.shape[1:])
    half = per_class.shape[1] // 2
    return per_class[:, :half].flatten(0, 1), per_class[:, half:].flatten(0, 1)


class PerFedAvg(MAML):
    """The first-order variant."""

    first_order = True

    def episode_gradient(self, params: Params, support_x: torch.Tensor,
                         support_y: torch.Tensor, query_x: torch.Tensor,
                         query_y: torch.Tensor) -> tuple[Params, torch.Tensor]:
        adapted = self.fast_weights(params, support_x, support_y, 1, first_order=True)
        return grad_and_value(lambda p: self.loss(p, query_x, query_y))(adapted)


class PerFedAvgHF(PerFedAvg):
    """The Hessian-free variant (exact Hessian-vector products)."""

    global_label_tasks = False  # halves its queries class by class

    def __init__(self, model: nn.Module, sampler: EpisodeSampler, local_optimizer: Transform,
                 local_steps: int = 1, tasks_per_step: int = 1, **inner: float | int | None) -> None:
        super().__init__(model, sampler.with_queries(2 * sampler.queries), local_optimizer,
                         local_steps, tasks_per_step, **inner)

    def episode_gradient(self, params: Params, support_x: torch.Tensor,
                         support_y: torch.Tensor, query_x: torch.Tensor,
                         query_y: torch.Tensor) -> tuple[Params, torch.Tensor]:
        ways = self.sampler.ways
        (query_x, hessian_x), (query_y, hessian_y) = halves(query_x, ways), halves(query_y, ways)
        g, loss = super().episode_gradient(params, support_x, support_y, query_x, query_y)
        hv = hessian_vector_product(lambda p: self.loss(p, hessian_x, hessian_y), params, g)
        return tree_map(lambda gi, hvi: gi - self.inner_lr * hvi, g, hv), loss
