"""Model-Agnostic Meta-Learning (Finn, Abbeel, Levine 2017, "Model-Agnostic Meta-Learning for
Fast Adaptation of Deep Networks"), second order.

A task adapts the meta-learned initialisation by `inner_steps` SGD steps of `inner_lr` on its
support loss; the meta-objective is the query loss at the adapted weights, differentiated
through the inner loop. Federated (FedMeta-MAML, Chen et al. 2018), clients meta-train on
their own episodes and the server averages the initialisations.

The model's head has one output per episode class (`head = "ways"`) and is meta-learned with
the body, so meta-test episodes must have as many ways as training episodes; `fedmeta.build`
rejects configs where they differ. Where tasks keep the dataset's labels (text,
`task.labels = "global"`), the head has one output per class of the dataset instead. At meta-test time a task takes `eval_inner_steps` steps
(default twice `inner_steps`, as MAML evaluates with more steps than it trains with), first
order, since no meta-gradient is needed there.

`inner_params` names the params the inner loop adapts by prefix (all of them when empty):
MeLU's split (Lee et al., KDD 2019) adapts a rating model's decision-making layers on a
user's support and learns its embeddings in the outer loop only.

Subclasses change one hook each: `first_order` (FOMAML), `adapted` (ANIL), `inner_lr_of`
(Meta-SGD), `local_gradient` (Per-FedAvg); Reptile its batches, gradient and optimizer.
"""

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import nn
from torch.func import grad_and_value

from fedmeta.data import EpisodeSampler, Episodes
from fedmeta.learners.base import Learner
from fedmeta.learners.inner import LearningRate, sgd_steps
from fedmeta.optim import Transform
from fedmeta.params import Params, tree_map


class MAML(Learner):
    """Second-order MAML; the task state is the adapted (fast) weights."""

    head = "ways"
    hyperparameters = ("inner_lr", "inner_steps", "eval_inner_steps", "inner_params")
    adaptation = ("inner_lr", "eval_inner_steps")
    adaptation_rate = "inner_lr"
    first_order: ClassVar[bool] = False
    regression = True

    def __init__(self, model: nn.Module, sampler: EpisodeSampler, local_optimizer: Transform,
                 local_steps: int = 1, tasks_per_step: int = 1, *, inner_lr: float = 0.4,
                 inner_steps: int = 1, eval_inner_steps: int | None = None,
                 inner_params: Sequence[str] = ()) -> None:
        super().__init__(model, sampler, local_optimizer, local_steps, tasks_per_step)
        self.inner_params = tuple(inner_params)
        self.inner_lr = inner_lr
        self.inner_steps = inner_steps
        self.eval_inner_steps = 2 * inner_steps if eval_inner_steps is None else eval_inner_steps

    def adapted(self, name: str) -> bool:
        """Whether the inner loop updates the param `name`: one of `inner_params` (all of
        them when it names none)."""
        return not self.inner_params or name.startswith(self.inner_params)

    def inner_lr_of(self, params: Params) -> LearningRate:
        return self.inner_lr

    def fast_weights(self, params: Params, x: torch.Tensor, y: torch.Tensor, steps: int,
                     first_order: bool) -> Params:
        """All params, the adapted ones after `steps` inner SGD steps on the loss on (x, y)."""
        fast = {k: v for k, v in params.items() if self.adapted(k)}
        task_loss = lambda adapted: self.loss({**params, **adapted}, x, y)  # noqa: E731
        fast, _ = sgd_steps(task_loss, fast, self.inner_lr_of(params), steps, first_order)
        return {**params, **fast}

    def adapt(self, params: Params, support_x: torch.Tensor, support_y: torch.Tensor) -> Any:
        return self.fast_weights(params, support_x, support_y, self.inner_steps,
                                 self.first_order)

    def eval_adapt(self, params: Params, support_x: torch.Tensor,
                   support_y: torch.Tensor) -> Any:
        return self.fast_weights(params, support_x, support_y, self.eval_inner_steps, True)

    def query_logits(self, params: Params, state: Any, query_x: torch.Tensor) -> torch.Tensor:
        return self.forward(state, query_x)

    def episode_gradient(self, params: Params, support_x: torch.Tensor,
                         support_y: torch.Tensor, query_x: torch.Tensor,
                         query_y: torch.Tensor) -> tuple[Params, torch.Tensor]:
        """First order: (the query loss's gradient at the adapted weights, the loss), which is
        the meta-gradient when the inner gradients are constants."""
        adapted = self.adapt(params, support_x, support_y)
        return grad_and_value(lambda w: self.loss(w, query_x, query_y))(adapted)

    def local_gradient(self, params: Params, episodes: Episodes) -> tuple[Params, torch.Tensor]:
        """Second order, the meta-loss's gradient through the inner loop; first order, the mean
        `episode_gradient`, each episode's inner loop run outside any outer `grad` (the same
        gradient without tracing the inner steps twice)."""
        if not self.first_order:
            return super().local_gradient(params, episodes)
        grads, losses = zip(*(self.episode_gradient(params, *(x[e] for x in (
            episodes.support_x, episodes.support_y, episodes.query_x, episodes.query_y)))
            for e in range(episodes.num_episodes)))
        return tree_map(lambda *gs: torch.stack(gs).mean(0), *grads), torch.stack(losses).mean()
