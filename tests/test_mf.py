"""Matrix factorization with a personal user side (federated collaborative filtering): the
user vector and bias stay on the client, a new user's fit is ridge least squares (checked
against `torch.linalg.lstsq` and autograd), and a run trains on a synthetic rating file."""

import pytest
import torch
from torch.func import functional_call, grad, vmap

from fedmeta.build import build_experiment
from fedmeta.config import load_config
from fedmeta.data import ColdStartSampler, movielens_federated
from fedmeta.engine.simulation import Simulation
from fedmeta.errors import UserError
from fedmeta.learners.fedper import FedPer
from fedmeta.learners.fedrep import FedRep
from fedmeta.models import MatrixFactorization, build_model
from fedmeta.optim import adam
from fedmeta.ratings import cold_start_test, global_mean
from ratings_file import GENRES, ITEMS, write_ratings

SHOTS, WIDTH, L2 = 5, 4, 0.3
USER = {"user.bias", "user.vector"}


@pytest.fixture(scope="module")
def path(tmp_path_factory):
    return write_ratings(tmp_path_factory.mktemp("ratings") / "ratings.npz", users=40)


@pytest.fixture(scope="module")
def users(path):
    return movielens_federated(path, test_fraction=0.25)


def mf_learner(cls, dtype=torch.float32, **kwargs):
    torch.manual_seed(0)
    model = MatrixFactorization(ITEMS, WIDTH).to(dtype)
    return cls(model, ColdStartSampler(SHOTS, 6), adam(0.05), local_steps=3,
               **{"batch_size": 8, "personal_l2": L2, **kwargs})


def test_mf_predicts_one_rating_per_row_and_vmaps_over_users(users):
    model = build_model("mf", (2 + GENRES,), None, items=ITEMS, embedding=WIDTH)
    params = {k: v + 0.1 * torch.randn_like(v) for k, v in model.named_parameters()}
    x = torch.stack([users[0].client(i).x[:6] for i in range(3)])
    one = torch.stack([functional_call(model, params, (xi,)) for xi in x])
    many = vmap(lambda xi: functional_call(model, params, (xi,)))(x)
    assert one.shape == (3, 6) and torch.allclose(one, many, atol=1e-6)
    item = x[0, :, 0].long()
    by_hand = (params["bias"] + params["item_bias.weight"][item, 0] + params["user.bias"]
               + params["item.weight"][item] @ params["user.vector"])
    assert torch.allclose(one[0], by_hand, atol=1e-6)


@pytest.mark.parametrize("cls", [FedPer, FedRep])
def test_the_user_side_never_leaves_the_client(users, cls):
    learner = mf_learner(cls)
    server = learner.init_params()
    assert not USER & set(server) and not USER & set(learner.client_model(server))
    update = learner.client_update(server, users[0].client(0), torch.Generator().manual_seed(0))
    assert set(update.delta) == set(server)  # the item side's change, nothing of the user's
    assert set(update.state) == USER and update.state["user.vector"].abs().sum() > 0
    assert update.delta["item.weight"].abs().sum() > 0
    again = learner.client_update(server, users[0].client(0), torch.Generator().manual_seed(0),
                                  update.state)  # the next round starts from the kept state
    assert not torch.equal(again.state["user.vector"], update.state["user.vector"])


def test_a_new_users_fit_is_ridge_least_squares():
    learner = mf_learner(FedRep, torch.float64)
    g = torch.Generator().manual_seed(1)
    server = {k: v + torch.randn(v.shape, generator=g, dtype=v.dtype)
              for k, v in learner.init_params().items()}
    x = torch.zeros(SHOTS, 2 + GENRES, dtype=torch.float64)
    x[:, 0] = torch.randperm(ITEMS, generator=g)[:SHOTS]
    y = 0.5 * torch.randint(1, 11, (SHOTS,), generator=g).double()
    fitted = learner.adapt(server, x, y)
    assert {k: fitted[k] for k in server} == server  # the item side frozen
    # min_w ||A w - r||^2 / K + L2 / 2 ||w||^2, w = [user vector, user bias], by hand
    item = x[:, 0].long()
    a = torch.cat([server["item.weight"][item], torch.ones(SHOTS, 1, dtype=torch.float64)], 1)
    r = y - server["bias"] - server["item_bias.weight"][item, 0]
    stacked = torch.cat([a, (SHOTS * L2 / 2) ** 0.5 * torch.eye(WIDTH + 1, dtype=torch.float64)])
    w = torch.linalg.lstsq(stacked, torch.cat([r, r.new_zeros(WIDTH + 1)])).solution
    assert torch.allclose(fitted["user.vector"], w[:WIDTH], atol=1e-10)
    assert torch.allclose(fitted["user.bias"], w[WIDTH:], atol=1e-10)
    own = {k: fitted[k] for k in USER}
    objective = grad(lambda p: learner.loss({**server, **p}, x, y)
                     + L2 / 2 * sum(v.square().sum() for v in p.values()))(own)
    assert all(v.abs().max() < 1e-10 for v in objective.values())  # a stationary point


def test_the_ridge_is_in_the_training_gradient(users):
    plain, ridged = mf_learner(FedPer, personal_l2=0.0), mf_learner(FedPer)
    model = {**plain.init_params(), "user.vector": torch.ones(WIDTH), "user.bias": torch.ones(1)}
    batch = plain.local_batches(users[0].client(0), torch.Generator().manual_seed(0))[0]
    base, _ = plain.local_gradient(model, batch)
    more, _ = ridged.local_gradient(model, batch)
    for k in model:
        assert torch.allclose(more[k] - base[k], L2 * model[k] if k in USER else 0 * model[k])


def test_fcf_trains_on_a_rating_file_and_beats_the_global_mean(path, tmp_path):
    config = load_config("configs/movielens_mf.toml", [
        f"data.path='{path}'", f"run.out_dir='{tmp_path}'", "server.rounds=12",
        "server.clients_per_round=8", "task.shots=5", "eval.shots=5", "eval.every=0"])
    experiment = build_experiment(config)
    params = Simulation(experiment).run()
    clients = [experiment.test.client(i) for i in range(experiment.test.num_clients)]
    learned = cold_start_test(lambda support, query_x: experiment.learner.query_logits(
        params, experiment.learner.eval_adapt(params, support.x, support.y), query_x),
        clients, ColdStartSampler(5, 1))
    reference = cold_start_test(global_mean(experiment.train), clients, ColdStartSampler(5, 1))
    assert learned.mae < reference.mae


@pytest.mark.parametrize("overrides, message", [
    (["learner.algorithm=ditto"], "new users are predicted by a shared model"),
    (["data.dataset=omniglot"], "needs model.name = 'conv4 or cnn or mlp'"),
])
def test_what_mf_cannot_take_is_one_line(path, overrides, message):
    with pytest.raises(UserError, match=message) as error:
        build_experiment(load_config("configs/movielens_mf.toml",
                                     [f"data.path='{path}'", *overrides]))
    assert "\n" not in str(error.value)
