"""LEAF Shakespeare: roles as clients, next-character samples as windows of the corpus, the
file's validation, next-character tasks, and runs of the character LSTM on them."""

import numpy as np
import pytest
import torch

from fedmeta.build import build_experiment
from fedmeta.cli import main
from fedmeta.config import validate
from fedmeta.data import OwnExamplesSampler, shakespeare_federated
from fedmeta.data.shakespeare import VOCAB, WINDOW, read_roles, sample_counts
from fedmeta.engine.simulation import Simulation
from fedmeta.errors import UserError

# Public-domain lines (Hamlet, Macbeth, As You Like It), one role each: (text, lines to test).
ROLES = [
    ("To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer\n"
     "The slings and arrows of outrageous fortune,\nOr to take arms against a sea of troubles,\n"
     "And by opposing end them.\n", 1),
    ("Tomorrow, and tomorrow, and tomorrow,\nCreeps in this petty pace from day to day,\n"
     "To the last syllable of recorded time;\nAnd all our yesterdays have lighted fools\n"
     "The way to dusty death. Out, out, brief candle!\n", 2),
    ("All the world's a stage,\nAnd all the men and women merely players;\n"
     "They have their exits and their entrances,\nAnd one man in his time plays many parts.\n", 1),
    ("Neither a borrower nor a lender be;\nFor loan oft loses both itself and friend,\n"
     "And borrowing dulls the edge of husbandry.\nThis above all: to thine own self be true.\n", 1),
    ("Frailty, thy name is woman!\nA little month, or ere those shoes were old\n"
     "With which she follow'd my poor father's body,\nLike Niobe, all tears.\n", 1),
    ("Something is rotten in the state of Denmark.\nHeaven will direct it.\n"
     "Nay, let's follow him.\n", 1),
]


def arrays(roles=ROLES) -> dict[str, np.ndarray]:
    """A tiny Shakespeare file in the format of shared/data/shakespeare.npz."""
    texts = [text for text, _ in roles]
    split = [split_of(text, tail) for text, tail in roles]
    return {"text": np.frombuffer("".join(texts).encode("ascii"), np.uint8),
            "offsets": np.cumsum([0] + [len(t) for t in texts]).astype(np.int64),
            "split_point": np.array(split, np.int64), "vocab": np.array([VOCAB]),
            "role": np.array([f"ROLE{i}" for i in range(len(roles))])}


@pytest.fixture
def tiny(tmp_path):
    path = tmp_path / "shakespeare.npz"
    np.savez_compressed(path, **arrays())
    return path


def ids(text: str) -> torch.Tensor:
    return torch.tensor([VOCAB.index(" " if c == "\n" else c) for c in text])


def split_of(text: str, tail: int) -> int:
    """Where a role's last `tail` lines start."""
    return len(text) - len("".join(text.splitlines(True)[-tail:]))


def test_windows_equal_direct_slices_of_the_role_text(tiny):
    train, test = shakespeare_federated(tiny, test_fraction=0.5, seed=0)
    seen = []
    for clients in (train, test):
        for i in range(clients.num_clients):
            client = clients.client(i)
            text, tail = next(r for r in ROLES if torch.equal(ids(r[0][:WINDOW]), client.x[0]))
            tokens, split = ids(text), split_of(text, tail)
            assert len(client) == clients.client_size(i) == len(text) - WINDOW
            for j in range(len(client)):
                assert torch.equal(client.x[j], tokens[j:j + WINDOW])
                assert client.y[j] == tokens[j + WINDOW]
                assert client.query_mask[j] == (j + WINDOW >= split)
            seen.append(text)
    # the last role's support part is shorter than a window: it has no support sample
    assert sorted(seen) == sorted(text for text, _ in ROLES[:-1])


def test_windows_are_views_of_the_corpus_not_copies(tiny):
    train, _ = shakespeare_federated(tiny, test_fraction=0.5, seed=0)
    a, b = train.client(0), train.client(1)
    assert a.x.untyped_storage().data_ptr() == b.x.untyped_storage().data_ptr()
    assert a.x.stride() == (1, 1)


def test_min_samples_keeps_roles_with_enough_support_and_query_samples(tiny):
    tokens, bounds = read_roles(tiny)
    support, query = sample_counts(bounds)
    lengths = [len(t) for t, _ in ROLES]
    assert list(support + query) == [n - WINDOW for n in lengths]
    keep = int(((support >= 30) & (query >= 30)).sum())
    assert 2 <= keep < len(ROLES)
    train, test = shakespeare_federated(tiny, test_fraction=0.5, seed=0, min_samples=30)
    assert train.num_clients + test.num_clients == keep
    for clients in (train, test):
        for i in range(clients.num_clients):
            mask = clients.client(i).query_mask
            assert (~mask).sum() >= 30 and mask.sum() >= 30


def test_roles_split_disjointly_by_seed(tiny):
    first = lambda ds: {int(ds.client(i).y[0]) * 1000 + len(ds.client(i))
                        for i in range(ds.num_clients)}
    train, test = shakespeare_federated(tiny, test_fraction=0.5, seed=0)
    assert (train.num_clients, test.num_clients) == (3, 2)
    assert not first(train) & first(test)
    again, _ = shakespeare_federated(tiny, test_fraction=0.5, seed=0)
    assert first(again) == first(train)
    assert train.num_classes == 80 and train.input_shape == (WINDOW,)


def test_tasks_draw_support_before_the_split_and_query_after_it(tiny):
    train, _ = shakespeare_federated(tiny, test_fraction=0.5, seed=0)
    client, sampler = train.client(0), OwnExamplesSampler(shots=7, queries=5)
    tasks = sampler.sample(client, 3, torch.Generator().manual_seed(0))
    assert tasks.support_x.shape == (3, 7, WINDOW) and tasks.query_y.shape == (3, 5)
    support = {tuple(x.tolist()) for x in client.x[~client.query_mask]}
    query = {tuple(x.tolist()) for x in client.x[client.query_mask]}
    assert all(tuple(x.tolist()) in support for x in tasks.support_x.flatten(0, 1))
    assert all(tuple(x.tolist()) in query for x in tasks.query_x.flatten(0, 1))
    again = sampler.sample(client, 3, torch.Generator().manual_seed(0))
    assert torch.equal(again.query_x, tasks.query_x)


def corrupt(name):
    a = arrays()
    if name == "vocab":
        a["vocab"] = np.array([VOCAB[::-1]])
    elif name == "offsets":
        a["offsets"] = a["offsets"][::-1].copy()
    elif name == "split_point":
        a["split_point"][2] = 0
    elif name == "character":
        a["text"] = a["text"].copy()
        a["text"][5] = ord("@")
    elif name == "text dtype":
        a["text"] = a["text"].astype(np.int32)
    elif name == "missing":
        del a["split_point"]
    return a


@pytest.mark.parametrize("name, message", [
    ("vocab", "vocab must be LEAF's"), ("offsets", "offsets must rise"),
    ("split_point", "split_point must leave"), ("character", "outside LEAF's vocabulary"),
    ("text dtype", "text must be uint8"), ("missing", "missing arrays split_point")])
def test_a_bad_file_is_one_line_naming_it(tmp_path, capsys, name, message):
    path = tmp_path / "bad.npz"
    np.savez(path, **corrupt(name))
    with pytest.raises(UserError, match=message):
        shakespeare_federated(path)
    config = tmp_path / "c.toml"
    config.write_text(f'[data]\ndataset = "shakespeare"\npath = "{path}"\n'
                      '[model]\nname = "char-lstm"\n[learner]\nalgorithm = "maml"\n')
    assert main(["run", str(config), "--out", str(tmp_path / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(path) in err and message in err


def text_config(path, algorithm: str, **learner) -> dict:
    return {"data": {"dataset": "shakespeare", "path": str(path), "test_fraction": 0.34,
                     "validation_fraction": 0.25},
            "task": {"shots": 4, "queries": 4}, "model": {"name": "char-lstm", "hidden": 8},
            "learner": {"algorithm": algorithm, **learner},
            "server": {"rounds": 1, "clients_per_round": 2},
            "eval": {"every": 1, "episodes": 2, "final_episodes": 3, "shots": 4, "queries": 4},
            "run": {"checkpoint_every": 0}}


@pytest.mark.parametrize("algorithm", ["maml", "fedavg-ft", "reptile"])
def test_learners_train_and_meta_test_on_roles(tiny, algorithm):
    experiment = build_experiment(validate(text_config(tiny, algorithm, finetune_steps=2)))
    simulation = Simulation(experiment)
    params = simulation.run()
    assert params["head.weight"].shape == (80, 8)
    assert all(v.isfinite().all() for v in params.values())
    result = simulation.evaluate(params, 3)
    assert 0 <= result["test_accuracy"] <= 1 and result["test_episodes"] == 3


def test_fedavg_scores_new_roles_with_its_global_model(tiny):
    experiment = build_experiment(validate(text_config(tiny, "fedavg")))
    learner, params = experiment.learner, experiment.learner.init_params()
    tasks = OwnExamplesSampler(4, 6).sample(experiment.test.client(0), 2, torch.Generator())
    predicted = learner.forward(params, tasks.query_x[1]).argmax(-1)
    assert learner.accuracy(params, tasks)[1] == (predicted == tasks.query_y[1]).float().mean()


@pytest.mark.parametrize("changes, message", [
    ({"model": {"name": "conv4"}}, "char-lstm"),
    ({"learner": {"algorithm": "protonet"}}, "does not learn next-character tasks"),
    ({"learner": {"algorithm": "perfedavg-hf"}}, "does not learn next-character tasks"),
    ({"eval": {"personalization_episodes": 1}}, "personalization_episodes = 0")])
def test_what_text_clients_cannot_do_is_a_config_error(tiny, changes, message):
    config = text_config(tiny, "maml")
    for section, values in changes.items():
        config[section] = {**config[section], **values}
    with pytest.raises(UserError, match=message):
        build_experiment(validate(config))


def test_the_shared_file(shared_data):
    path = shared_data / "shakespeare.npz"
    tokens, bounds = read_roles(path)
    assert len(bounds) == 1091 and len(tokens) == 4_006_892
    with np.load(path) as f:
        hamlet = int(np.flatnonzero(f["role"] == "HAMLET")[0])
        text = f["text"][f["offsets"][hamlet]:f["offsets"][hamlet + 1]].tobytes().decode()
    assert text.startswith("A little more than kin, and less than kind.\n")
    train, test = shakespeare_federated(path, seed=0)
    assert train.num_clients + test.num_clients == 1091 - 23  # first parts of < 81 characters
