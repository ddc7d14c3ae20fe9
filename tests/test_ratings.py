"""The MeLU-shaped rating model with the existing learners (squared error through
`Learner.criterion`), the cold-start metrics against independent references, and
`fedmeta run`/`eval` on a synthetic rating file."""

import json

import numpy as np
import pytest
import torch
from sklearn.metrics import ndcg_score
from torch.func import functional_call, vmap

from fedmeta.adaptation import Candidates, choose_adaptation
from fedmeta.build import build_experiment
from fedmeta.config import load_config
from fedmeta.data import ClientData, ColdStartSampler, movielens_federated
from fedmeta.engine.simulation import Simulation
from fedmeta.errors import UserError
from fedmeta.learners.fedavg import FedAvg, FedAvgFT
from fedmeta.learners.maml import MAML
from fedmeta.learners.perfedavg import PerFedAvgHF
from fedmeta.learners.reptile import Reptile
from fedmeta.models import MeLU
from fedmeta.optim import sgd
from fedmeta.ratings import (baseline_biases, cold_start_test, global_mean, item_mean_user_bias,
                             item_means,
                             learner_predictor, ndcg_at)
from ratings_file import GENRES, ITEMS, write_ratings
from test_cli import fedmeta

SHOTS = 5


@pytest.fixture(scope="module")
def path(tmp_path_factory):
    return write_ratings(tmp_path_factory.mktemp("ratings") / "ratings.npz")


@pytest.fixture(scope="module")
def users(path):
    return movielens_federated(path, test_fraction=0.25)


def melu_learner(cls, dtype=torch.float32, **kwargs):
    torch.manual_seed(0)
    model = MeLU(GENRES, ITEMS, embedding=4, hidden=6).to(dtype)
    return cls(model, ColdStartSampler(SHOTS, 6), sgd(0.1), **kwargs)


def episodes(train, count=2):
    return ColdStartSampler(SHOTS, 6).sample(train.client(0), count,
                                             torch.Generator().manual_seed(0))


def as_double(batch):
    return type(batch)(*(v.double() for v in vars(batch).values()))


def test_melu_predicts_one_rating_per_row_and_vmaps_over_users(users):
    train, _ = users
    model = MeLU(GENRES, ITEMS, embedding=4, hidden=6)
    batch = episodes(train, 3)
    params = dict(model.named_parameters())
    one = torch.stack([functional_call(model, params, (x,)) for x in batch.query_x])
    many = vmap(lambda x: functional_call(model, params, (x,)))(batch.query_x)
    assert one.shape == (3, 6) and torch.allclose(one, many, atol=1e-6)


def test_second_order_maml_on_ratings_is_autograd_through_the_inner_step(users):
    learner = melu_learner(MAML, torch.float64, inner_lr=0.3, inner_params=("mlp.", "head."))
    params = {k: v.clone().requires_grad_() for k, v in learner.init_params().items()}
    batch = as_double(episodes(users[0], 1))
    grads, loss = learner.local_gradient(params, batch)
    # the same meta-gradient by torch.autograd: one inner SGD step on the local layers only
    sx, sy, qx, qy = (t[0] for t in (batch.support_x, batch.support_y, batch.query_x,
                                     batch.query_y))
    inner = ((functional_call(learner.model, params, (sx,)) - sy) ** 2).mean()
    local = [k for k in params if k.startswith(("mlp.", "head."))]
    g = torch.autograd.grad(inner, [params[k] for k in local], create_graph=True)
    fast = {**params, **{k: params[k] - 0.3 * gk for k, gk in zip(local, g)}}
    outer = ((functional_call(learner.model, fast, (qx,)) - qy) ** 2).mean()
    expected = torch.autograd.grad(outer, list(params.values()))
    assert torch.isclose(loss, outer)
    for (name, value), reference in zip(params.items(), expected):
        assert torch.allclose(grads[name], reference, atol=1e-10), name
    assert grads["item.weight"].abs().sum() > 0  # the global embeddings learn in the outer loop


@pytest.mark.parametrize("cls", [MAML, Reptile, PerFedAvgHF, FedAvg, FedAvgFT])
def test_learners_train_and_predict_ratings(users, cls):
    train, test = users
    learner = melu_learner(cls, **({"batch_size": 8} if cls in (FedAvg, FedAvgFT) else {}))
    params = learner.init_params()
    update = learner.client_update(params, train.client(1), torch.Generator().manual_seed(0))
    assert np.isfinite(update.loss) and all(v.isfinite().all() for v in update.delta.values())
    clients = [test.client(i) for i in range(test.num_clients)]
    result = cold_start_test(learner_predictor(learner, params), clients,
                             ColdStartSampler(SHOTS, 1))
    assert result.clients == test.num_clients and 0 < result.mae < 5 and 0 < result.ndcg10 <= 1


def test_ndcg_is_scikit_learns_and_errors_are_numpys():
    g = np.random.default_rng(0)
    for n in (3, 10, 25):
        ratings, predicted = g.integers(1, 11, n) / 2, g.normal(size=n)
        assert np.isclose(ndcg_at(torch.tensor(predicted), torch.tensor(ratings)),
                          ndcg_score([ratings], [predicted], k=10))
    support = ClientData(torch.zeros(3, 2 + GENRES), torch.ones(3))
    query = ClientData(torch.zeros(4, 2 + GENRES), torch.tensor([1.0, 2.0, 4.0, 5.0]))
    user = ClientData(torch.cat([support.x, query.x]), torch.cat([support.y, query.y]))
    result = cold_start_test(lambda s, x: torch.full((len(x),), 3.0), [user],
                             ColdStartSampler(3, 1))
    assert np.isclose(result.mae, 1.5) and np.isclose(result.rmse, np.sqrt(2.5))


def test_item_mean_plus_user_bias_by_hand(users):
    train, _ = users
    items = torch.cat([train.client(i).x[:, 0] for i in range(train.num_clients)]).long()
    ratings = torch.cat([train.client(i).y for i in range(train.num_clients)]).double()
    mean = ratings.mean()
    item = int(items[0])
    shrunk = (ratings[items == item].sum() + 5 * mean) / ((items == item).sum() + 5)
    x = torch.zeros(1, 2 + GENRES)
    x[0, 0] = item
    support = ClientData(x, torch.tensor([float(shrunk) + 0.5]))  # half a star above the mean
    predicted = item_mean_user_bias(item_means(train))(support, x)
    assert torch.isclose(predicted.double(), shrunk + 0.5, atol=1e-5).all()
    # Koren's regularized bias: one rating's residual over 1 + 4 ratings' worth
    damped = item_mean_user_bias(item_means(train), user_damping=4.0)(support, x)
    assert torch.isclose(damped.double(), shrunk + 0.1, atol=1e-5).all()
    assert torch.isclose(global_mean(train)(support, x).double(), mean, atol=1e-5).all()


def test_koren_baseline_biases_solve_their_normal_equations(users):
    """The fitted biases are the regularized least-squares solution: every item's residuals
    sum to its damping times its bias (an item no one rated: 0), every training user's
    likewise."""
    train, _ = users
    items = torch.cat([train.client(i).x[:, 0] for i in range(train.num_clients)]).long()
    owners = torch.cat([torch.full((len(train.client(u)),), u)
                        for u in range(train.num_clients)])
    ratings = torch.cat([train.client(i).y for i in range(train.num_clients)]).double()
    mean, item_bias, user_bias = baseline_biases(train, 3.0, 7.0)
    residual = ratings - mean - item_bias[items] - user_bias[owners]
    per_item = torch.zeros_like(item_bias).index_add_(0, items, residual)
    per_user = torch.zeros_like(user_bias).index_add_(0, owners, residual)
    assert torch.allclose(per_item, 3.0 * item_bias, atol=1e-8)
    assert torch.allclose(per_user, 7.0 * user_bias, atol=1e-8)


@pytest.mark.slow
def test_run_and_eval_on_a_rating_file(path, tmp_path):
    out = tmp_path / "runs"
    result = fedmeta("run", "configs/movielens_melu.toml", "--quiet",
                     "--set", f"data.path='{path}'", "--set", f"run.out_dir='{out}'",
                     "--set", "server.rounds=4", "--set", "eval.every=2",
                     "--set", "server.clients_per_round=4", "--set", "eval.shots=5",
                     "--set", "task.shots=5")
    assert result.returncode == 0, result.stderr
    assert "MAE" in result.stdout and "NDCG@10" in result.stdout
    run = next(out.iterdir())
    summary = json.loads((run / "summary.json").read_text())
    assert summary["selected"]["rule"] == "best val_mae" and summary["meta_test"]["mae"] > 0
    evaluated = fedmeta("eval", run, "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads(evaluated.stdout)["mae"] == summary["meta_test"]["mae"]


@pytest.mark.parametrize("setting, message", [
    ("learner.algorithm=protonet", "new users are predicted by a shared model"),
    ("learner.algorithm=ditto", "new users are predicted by a shared model"),
    ("model.name=conv4", "needs model.name = 'melu or mf'"),
])
def test_what_ratings_cannot_take_is_one_line(path, setting, message):
    with pytest.raises(UserError, match=message) as error:
        build_experiment(load_config("configs/movielens_melu.toml",
                                     [f"data.path='{path}'", setting]))
    assert "\n" not in str(error.value)


def test_the_adaptation_rate_of_rating_models_is_chosen_by_the_lowest_validation_mae(path):
    """`fedmeta.adaptation` on ratings: the rate whose meta-validation MAE is lowest, as each
    rate alone scores it (a larger MAE is worse, unlike accuracy)."""
    def experiment(*overrides):
        return build_experiment(load_config("configs/movielens_melu.toml", [
            f"data.path='{path}'", "eval.shots=5", "task.shots=5", "learner.eval_inner_steps=3",
            *overrides]))

    params = experiment().learner.init_params()
    rates = ("0.001", "0.05", "3.0")
    chosen, override, tried = choose_adaptation(experiment(), params, None,
                                                Candidates("learner.inner_lr", rates))
    alone = [Simulation(experiment(f"learner.inner_lr={rate}")).evaluate(
        params, 1, on="val")["val_mae"] for rate in rates]
    assert [trial["val_mae"] for trial in tried] == alone
    assert len(set(alone)) == 3
    assert override == [f"learner.inner_lr={rates[alone.index(min(alone))]}"]
    assert chosen.config.learner.inner_lr == float(rates[alone.index(min(alone))])
