"""Scoring cold-start recommendation on new users (MeLU, Lee et al., KDD 2019, Sec. 4): each
held-out user is adapted on its first K ratings and predicts every later one; its MAE, RMSE
and NDCG@10 (the later items ranked by predicted rating, gains the true ratings, as
scikit-learn's `ndcg_score`) are averaged over users, with 95% CIs over users.

A predictor is anything that maps a user's support ratings and the query items' features to
predicted ratings: a learner's adapted model (`learner_predictor`), or a non-federated
reference fitted on the training users' ratings (`global_mean`, `item_mean_user_bias` of
`item_means` or of Koren's `baseline_biases`)."""

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from fedmeta.data import ClientData, ColdStartSampler, FederatedDataset
from fedmeta.errors import UserError
from fedmeta.evaluation import mean_ci95
from fedmeta.learners.base import Learner
from fedmeta.params import Params

Predictor = Callable[[ClientData, torch.Tensor], torch.Tensor]  # (support, query x) -> [Q]
NDCG_AT = 10


def ndcg_at(predicted: torch.Tensor, ratings: torch.Tensor, k: int = NDCG_AT) -> float:
    """NDCG@k of ranking a user's items by `predicted` [n], the gain of an item its rating."""
    discounts = 1.0 / torch.log2(torch.arange(2, min(k, len(ratings)) + 2, dtype=torch.float64))
    ranked = ratings[torch.argsort(predicted, descending=True, stable=True)][:k].double()
    ideal = torch.sort(ratings, descending=True).values[:k].double()
    best = float((ideal * discounts).sum())
    return float((ranked * discounts).sum()) / best if best > 0 else 0.0


@dataclass(frozen=True)
class RatingResult:
    """Means over users of each user's MAE, RMSE and NDCG@10 on its query ratings, each with
    its 95% CI over users; how many users were scored of how many held out; each user's MAE."""

    mae: float
    mae_ci95: float
    rmse: float
    rmse_ci95: float
    ndcg10: float
    ndcg10_ci95: float
    clients: int
    held_out_clients: int
    ratings: int  # query ratings scored, all users together
    per_client_mae: tuple[float, ...]

    def as_dict(self, per_client: bool = False) -> dict[str, Any]:
        fields = asdict(self)
        if not per_client:
            del fields["per_client_mae"]
        return fields

    def __str__(self) -> str:
        return rating_line(self.as_dict())


def rating_line(result: dict[str, Any]) -> str:
    """A rating evaluation's scores (`RatingResult.as_dict`), one line."""
    return (f"MAE {result['mae']:.4f} ± {result['mae_ci95']:.4f}, RMSE {result['rmse']:.4f} ± "
            f"{result['rmse_ci95']:.4f}, NDCG@10 {result['ndcg10']:.4f} ± "
            f"{result['ndcg10_ci95']:.4f} (95% CI over {result['clients']} of "
            f"{result['held_out_clients']} users)")


def user_scores(predicted: torch.Tensor, ratings: torch.Tensor) -> tuple[float, float, float]:
    """(MAE, RMSE, NDCG@10) of one user's predicted ratings."""
    error = (predicted.double() - ratings.double())
    return (float(error.abs().mean()), float(error.square().mean().sqrt()),
            ndcg_at(predicted, ratings))


def cold_start_test(predict: Predictor, clients: Sequence[ClientData],
                    sampler: ColdStartSampler) -> RatingResult:
    """Every held-out user with more ratings than `sampler.shots`, adapted on its first
    `shots` and scored on the rest. UserError if no user has that many."""
    check_users(clients, sampler)
    scored = [sampler.split(client) for client in clients if sampler.eligible(client)]
    return rating_result([user_scores(predict(support, query.x), query.y)
                          for support, query in scored], len(clients),
                         sum(len(query) for _, query in scored))


def rating_result(scores: Sequence[Sequence[float]], held_out: int,
                  ratings: int) -> RatingResult:
    """The means over users, with 95% CIs, of each scored user's (MAE, RMSE, NDCG@10)
    (`user_scores`: computed here, or on the user's own machine in a deployment), of
    `held_out` users, `ratings` query ratings in all."""
    table = torch.tensor(scores, dtype=torch.float64).reshape(-1, 3)
    (mae, mae_ci), (rmse, rmse_ci), (ndcg, ndcg_ci) = (mean_ci95(table[:, j]) for j in range(3))
    return RatingResult(mae, mae_ci, rmse, rmse_ci, ndcg, ndcg_ci, len(table), held_out,
                        ratings, tuple(table[:, 0].tolist()))


def learner_predictor(learner: Learner, params: Params) -> Predictor:
    """A learner's prediction for a new user: adapted to the support as at meta-test
    (`eval_adapt`), its query outputs on the host."""
    def predict(support: ClientData, query_x: torch.Tensor) -> torch.Tensor:
        state = learner.eval_adapt(params, *learner.on_device((support.x, support.y)))
        with torch.no_grad():
            return learner.query_logits(params, state, learner.on_device(query_x)).cpu()
    return predict


def training_ratings(train: FederatedDataset) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(item index [R] int64, rating [R], user index [R] int64) of every rating of the
    training users."""
    clients = [train.client(i) for i in range(train.num_clients)]
    return (torch.cat([c.x[:, 0] for c in clients]).long(), torch.cat([c.y for c in clients]),
            torch.cat([torch.full((len(c),), u) for u, c in enumerate(clients)]))


def global_mean(train: FederatedDataset) -> Predictor:
    """Every rating predicted as the training users' mean rating."""
    mean = training_ratings(train)[1].double().mean().float()
    return lambda support, query_x: mean.expand(len(query_x))


def item_means(train: FederatedDataset, damping: float = 5.0) -> torch.Tensor:
    """Each item's mean rating over the training users [items], shrunk to their global mean
    by `damping` pseudo-ratings (an item none of them rated: the global mean)."""
    items, ratings, _ = training_ratings(train)
    mean = ratings.double().mean()
    count = torch.bincount(items, minlength=train.num_items).double()
    total = torch.zeros(train.num_items, dtype=torch.float64).index_add_(0, items, ratings.double())
    return (total + damping * mean) / (count + damping)


def baseline_biases(train: FederatedDataset, item_damping: float, user_damping: float,
                    sweeps: int = 200) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Koren's baseline predictor fitted to the training users (Koren 2010, "Factor in the
    Neighbors", Sec. 2.1): the global mean, item biases [items] and user biases [users]
    minimizing the squared error of mean + b_u + b_i plus `item_damping` and `user_damping`
    times the biases' squares, by exact minimization over the items and the users in turn
    (coordinate descent on a convex quadratic, `sweeps` times)."""
    items, ratings, users = training_ratings(train)
    ratings = ratings.double()
    mean = ratings.mean()
    item_count = torch.bincount(items, minlength=train.num_items).double()
    user_count = torch.bincount(users, minlength=train.num_clients).double()
    item_bias = torch.zeros(train.num_items, dtype=torch.float64)
    user_bias = torch.zeros(train.num_clients, dtype=torch.float64)
    for _ in range(sweeps):
        item_bias = (torch.zeros_like(item_bias).index_add_(
            0, items, ratings - mean - user_bias[users]) / (item_count + item_damping))
        user_bias = (torch.zeros_like(user_bias).index_add_(
            0, users, ratings - mean - item_bias[items]) / (user_count + user_damping))
    return mean, item_bias, user_bias


def item_mean_user_bias(item_mean: torch.Tensor, user_damping: float = 0.0) -> Predictor:
    """The item's mean (`item_means`) plus the new user's bias, its support ratings' residuals
    from their items' means summed and divided by their count plus `user_damping` (0: their
    mean; Koren 2010, "Factor in the Neighbors", Sec. 2.1, the baseline predictor, whose
    regularization shrinks a bias read from few ratings towards 0)."""
    def predict(support: ClientData, query_x: torch.Tensor) -> torch.Tensor:
        residuals = support.y.double() - item_mean[support.x[:, 0].long()]
        bias = residuals.sum() / (len(residuals) + user_damping)
        return (item_mean[query_x[:, 0].long()] + bias).float()
    return predict


def check_users(clients: Sequence[ClientData], sampler: ColdStartSampler) -> None:
    """UserError if no held-out user can be scored (more ratings than the support's)."""
    if not any(sampler.eligible(client) for client in clients):
        raise UserError(f"no held-out user has more than {sampler.shots} ratings "
                        "(eval.shots is the support set's size)")
