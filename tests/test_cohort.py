"""Cohort execution: the per-client loop and the vmapped cohort run the same steps on the same
data, so they agree to float rounding for every learner; chunks and skipped clients."""

import pytest
import torch

from fedmeta.build import LEARNERS
from fedmeta.config import LearnerConfig
from fedmeta.data import ClientData, EpisodeSampler, Episodes
from fedmeta.engine.cohort import choose_execution, run_cohort, stack_batches
from fedmeta.models import MLP, build_model
from fedmeta.optim import adam, sgd
from test_learners_registry import GLOBAL_CLASSES, omniglot_like_client
from tiny import WAYS


def learner_of(algorithm: str, model_name: str = "conv4", optimizer=sgd(0.05)):
    cls = LEARNERS[algorithm]
    torch.manual_seed(0)
    heads = {"none": None, "ways": WAYS, "global": GLOBAL_CLASSES}
    shape = (1, 16, 16) if model_name == "conv4" else (16, 16)
    model = build_model(model_name, shape, heads[cls.head], hidden=4,
                        batch_norm=algorithm == "fedbn")
    defaults = LearnerConfig(inner_lr=0.1, batch_size=40, lr=0.05)
    return cls(model, EpisodeSampler(WAYS, 1, 2), optimizer, local_steps=2, tasks_per_step=2,
               **{key: getattr(defaults, key) for key in cls.hyperparameters},
               **({"num_clients": 3} if cls.takes_num_clients else {}))


def initial_states(learner, count):
    """Each client's personal state before its first round (the learners that keep one)."""
    return [learner.initial_state() for _ in range(count)]


def cohort(sizes=(48, 30, 36)) -> list[ClientData]:
    """Omniglot-like clients; the 30-example one is smaller than FedAvg's batch of 40."""
    client = omniglot_like_client()
    return [ClientData(client.x[:n], client.y[:n]) for n in sizes]


def generators(n: int) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(10 + i) for i in range(n)]


@pytest.mark.parametrize("model_name", ["conv4", "mlp"])
@pytest.mark.parametrize("algorithm", sorted(LEARNERS))
def test_vmap_matches_the_per_client_loop(algorithm, model_name):
    learner = learner_of(algorithm, model_name)
    clients = cohort()
    sent = learner.client_params(learner.init_params(), torch.arange(3))  # pfedhn's differ
    states = initial_states(learner, 3)  # learners that keep them run the loop
    loop = run_cohort(learner, sent, clients, generators(3), "loop", per_client=True,
                      states=states)
    vmapped = run_cohort(learner, sent, clients, generators(3), "vmap", chunk_size=2,
                         per_client=True, states=states)
    assert loop.num_clients == vmapped.num_clients == 3
    for key in sent:
        torch.testing.assert_close(vmapped.deltas[key], loop.deltas[key], atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(vmapped.losses, loop.losses, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(vmapped.weights, loop.weights)
    moved = loop.deltas if algorithm != "local" else {  # local-only sends nothing
        k: loop.states[k] - sent[k] for k in sent}
    assert moved[next(iter(sent))].abs().sum() > 0


def test_vmap_steps_adam_per_client_like_the_loop():
    learner = learner_of("protonet", "mlp", adam(1e-3))
    params, clients = learner.init_params(), cohort()
    loop = run_cohort(learner, params, clients, generators(3), "loop")
    vmapped = run_cohort(learner, params, clients, generators(3), "vmap")
    for key in ("features.1.weight", "features.3.weight"):
        torch.testing.assert_close(vmapped.deltas[key], loop.deltas[key], atol=1e-6, rtol=1e-3)


@pytest.mark.parametrize("execution", ["loop", "vmap"])
def test_clients_without_an_episode_are_skipped(execution):
    learner = learner_of("protonet")
    one_class = ClientData(torch.zeros(10, 16, 16, dtype=torch.uint8), torch.zeros(10).long())
    clients = [one_class, *cohort((48,)), one_class]
    updates = run_cohort(learner, learner.init_params(), clients, generators(3), execution)
    assert (updates.num_clients, updates.skipped) == (1, 2)
    alone = run_cohort(learner, learner.init_params(), [one_class], generators(1), execution)
    assert (alone.num_clients, alone.skipped) == (0, 1)
    assert all(d.shape[0] == 0 for d in alone.deltas.values())


def test_rule_is_loop_for_convolutions_and_lstms_on_the_cpu_and_vmap_otherwise():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    conv, mlp = build_model("conv4", (1, 16, 16), 5, 4), MLP((8,), (4,), 3)
    assert choose_execution(conv, cpu) == "loop"
    assert choose_execution(conv, cuda) == "vmap"
    assert choose_execution(mlp, cpu) == "vmap"
    lstm = build_model("char-lstm", (80,), 80, hidden=4)
    assert (choose_execution(lstm, cpu), choose_execution(lstm, cuda)) == ("loop", "vmap")


def test_stack_batches_stacks_tensors_tuples_and_episodes():
    e = Episodes(torch.zeros(2, 3, 4), torch.zeros(2, 3).long(), torch.ones(2, 5, 4),
                 torch.ones(2, 5).long())
    stacked = stack_batches([e, e, e])
    assert isinstance(stacked, Episodes) and stacked.query_x.shape == (3, 2, 5, 4)
    pair = stack_batches([(torch.zeros(2), torch.ones(1)), (torch.zeros(2), torch.ones(1))])
    assert pair[0].shape == (2, 2) and pair[1].shape == (2, 1)
