"""What a SuperNode's client computes, on its own data: each handler takes a message's
content and the node's config (`--node-config`) and returns the reply's content.
`fedmeta.flower.client_app` calls them, in a node's long-lived worker on a deployment
(`fedmeta.flower.node_worker`) or in-process in Flower's simulation.

A deployed node's config names its data file (`data-path`, see `fedmeta.data.client_files`:
a phone's user's ratings too, scored as a new user by MAE, RMSE and NDCG@10 when held out,
and a speaking role's text), whether the client is held out for evaluation only, as a
meta-test client (`held-out`) or a meta-validation one (`validation`), and, for CKKS
aggregation, the shared secret-key context (`ckks-key`, written by `fedmeta ckks-keys`). The
data never leaves the node, only params deltas (or their encryption) and metrics do. In
Flower's simulation a node has only a `partition-id`: it is client `partition-id` of the
config's training, then meta-validation, then meta-test clients (`build_datasets`), numbered
on; with own splits, training client `partition-id` with its own validation and test parts.

A client of a learner that keeps personal state (`Learner.keeps_state`: Ditto's personal model,
FedPer's head, FedBN's norms) keeps it in the node's process, for the run of the message
(`personal_states`): a deployed node's long-lived worker holds it from round to round, what
each round left it (a finite state), whether or not the server used the round's reply; a node
restarted starts it afresh. A learner that `commits_state` (SCAFFOLD, whose server keeps its
control variate the mean of the clients') keeps a round's new state pending instead, and
makes it its own when a later train message says the server used that round's reply
(`released-round`), as the simulation keeps only what a released round left. Flower's
simulation spreads its clients over processes, so it refuses such learners.
"""

from collections import OrderedDict
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, NamedTuple

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, MetricRecord, RecordDict
from flwr.common import Code, FitRes, Status, parameters_to_ndarrays
from flwr.compat.common import recorddict_compat as compat

from fedmeta.build import (OWN_SPLITS, Datasets, build_client_stage, build_datasets,
                           build_learner, episode_sampler, fixed_denominator)
from fedmeta.engine.experiment import learner_at_round
from fedmeta.engine.simulation import episode_stream
from fedmeta.config import Config
from fedmeta.data import ClientData, ColdStartSampler, NotEnoughData
from fedmeta.data.client_files import ClientFile, load_client
from fedmeta.data.federated import float_input_shape
from fedmeta.seeding import EVAL_STREAM, client_generator, seeded
from fedmeta.device import HOST, local_precision, to_device
from fedmeta.errors import UserError
from fedmeta.flower import vertical_node
from fedmeta.flower.secagg import from_arrays, to_parameters
from fedmeta.learners.base import Learner, Update
from fedmeta.params import Params, flatten_rows, owned, unflatten
from fedmeta.privacy.encryption import decrypt, encrypt, load_context
from fedmeta.ratings import learner_predictor, user_scores
from fedmeta.server.aggregate import coefficients
from fedmeta.server.chain import Round


def version(path: str) -> tuple[str, int, int]:
    """`path` with its file's modification time and size: a cache key that a file written
    again (new client data, new CKKS keys) does not match."""
    try:
        stat = Path(path).stat()
    except OSError:  # the loader says what is wrong with it
        return path, 0, 0
    return path, stat.st_mtime_ns, stat.st_size


@lru_cache(maxsize=4)
def loaded_client(path: str, mtime_ns: int, size: int) -> ClientFile:
    return load_client(path)


def local_client(path: str) -> ClientFile:
    return loaded_client(*version(path))


@lru_cache(maxsize=4)
def parsed(config_json: str) -> Config:
    """The run's config, from the JSON every message carries (parsed once per run)."""
    return Config.model_validate_json(config_json)


@lru_cache(maxsize=4)
def learner_for(config_json: str, input_shape: tuple[int, ...], num_classes: int,
                num_items: int, device: str) -> Learner:
    torch.set_num_threads(1)  # one client per process; SuperNodes may share a machine
    return build_learner(parsed(config_json), input_shape, num_classes, device=device,
                         num_items=num_items)


@lru_cache(maxsize=2)
def loaded_context(path: str, mtime_ns: int, size: int):
    return load_context(Path(path).read_bytes())


def ckks_context(path: str):
    return loaded_context(*version(path))


class PersonalStates(NamedTuple):
    """A run's clients' personal states in this process, by client id: those kept, for a
    learner that `commits_state` each client's last new one with the round that left it, and
    those its own validation part was scored with, by round: the last one and the one of the
    round model selection had chosen by then, the meta-test's if it stays chosen."""

    kept: dict[int, Params]
    pending: dict[int, tuple[int, Params]]
    validated: dict[int, dict[int, Params]]


PERSONAL: OrderedDict[str, PersonalStates] = OrderedDict()  # by run
RUNS_KEPT = 4  # a SuperLink may run several at once


def personal_states(run: str) -> PersonalStates:
    """The personal states this process keeps for `run` (its id and config): those of the
    `RUNS_KEPT` runs messaged last."""
    PERSONAL.setdefault(run, PersonalStates({}, {}, {}))
    PERSONAL.move_to_end(run)
    while len(PERSONAL) > RUNS_KEPT:
        PERSONAL.popitem(last=False)
    return PERSONAL[run]


@lru_cache(maxsize=1)
def simulated_datasets(config_json: str) -> Datasets:
    return build_datasets(parsed(config_json))


class NodeClient(NamedTuple):
    """A node's client: its id, its data, its role ("train", "val" or "test"), the label space
    it knows (its file's labels 0..max, 1 for ratings; in Flower's simulation the config's
    dataset's, LEAF's vocabulary for a role), the item space its ratings index (0 unless a
    rating client) and, a training client of own splits, its validation and test parts."""

    client_id: int
    data: ClientData
    role: str
    num_classes: int
    num_items: int
    held: tuple[ClientData, ClientData] | None = None


def node_client(settings: Any, node: dict[str, Any]) -> NodeClient:
    """This node's client; `settings`: the config record of the message (it carries the
    fedmeta config)."""
    if "data-path" in node:
        file = local_client(str(node["data-path"]))
        role = ("test" if node.get("held-out", False) else
                "val" if node.get("validation", False) else "train")
        return NodeClient(file.client_id, file.data, role, file.num_classes, file.num_items,
                          file.held)
    partition = int(node["partition-id"])
    datasets = simulated_datasets(str(settings["fedmeta"]))
    if parsed(str(settings["fedmeta"])).data.dataset in OWN_SPLITS:  # training clients only
        train, validation, test = datasets
        if partition >= train.num_clients:
            raise UserError(f"node partition-id {partition}: the config has only "
                            f"{train.num_clients} clients")
        return NodeClient(partition, train.client(partition), "train", train.num_classes, 0,
                          (validation.client(partition), test.client(partition)))
    first = 0
    for role, clients in zip(("train", "val", "test"), datasets):
        if partition < first + clients.num_clients:
            return NodeClient(partition, clients.client(partition - first), role,
                              clients.num_classes, clients.num_items)
        first += clients.num_clients
    raise UserError(f"node partition-id {partition}: the config has only {first} clients")


def input_shape(client: ClientData) -> tuple[int, ...]:
    return float_input_shape(tuple(client.x.shape[1:]), client.x.dtype == torch.uint8)


def node_learner(settings: Any, node: dict[str, Any],
                 client: ClientData) -> tuple[Config, Learner]:
    """The run's config and learner, from a message's config record (`settings`), on the
    node's own device (node config `device`: "auto", "cpu", "cuda", "cuda:N"; default
    "auto"), whatever the server computes on."""
    text = str(settings["fedmeta"])
    learner = learner_for(text, input_shape(client), int(settings["num-classes"]),
                          int(settings["num-items"]), str(node.get("device", "auto")))
    return parsed(text), learner


def describe(content: RecordDict, node: dict[str, Any]) -> RecordDict:
    """The node's client as the server needs to know it: id, example count, input shape,
    label space, item space, role; a client of own splits, its held-out parts' sizes and how
    many classes it trains on; the simulated clients' counts (in Flower's simulation); the
    public part of its CKKS key, if it holds one."""
    client_id, client, role, num_classes, num_items, held = node_client(content["config"], node)
    record = ConfigRecord({"client-id": client_id, "num-examples": len(client),
                           "input-shape": list(input_shape(client)),
                           "num-classes": num_classes, "num-items": num_items, "role": role})
    if held is not None:  # a client of own splits: its parts' sizes, its own classes
        record["held-examples"] = [len(part) for part in held]
        record["own-classes"] = len(client.classes)
    if "data-path" not in node:  # a partition of Flower's simulation
        train, validation, test = simulated_datasets(str(content["config"]["fedmeta"]))
        record["simulated-clients"] = [train.num_clients, 0, 0] if held is not None else [
            train.num_clients, validation.num_clients, test.num_clients]
    if "ckks-key" in node:
        key = ckks_context(str(node["ckks-key"]))
        record["ckks-public"] = key.serialize(save_secret_key=False, save_relin_keys=False)
    return RecordDict({"node": record})


def local_update(settings: Any, node: dict[str, Any],
                 arrays: list[np.ndarray]) -> tuple[Config, Update | None]:
    """The node's client update from the params the server sent it, as arrays in the order of
    the learner's `client_model`, and its personal state, which it keeps (None: too little
    data)."""
    client_id, client, *_ = node_client(settings, node)
    config, learner = node_learner(settings, node, client)
    params = from_arrays(arrays, learner.client_model(learner.init_params()))
    round_index = int(settings["round"])
    states = personal_states(f"{node.get('run-id')}:{settings['fedmeta']}")
    if learner.commits_state:
        left_in, state = states.pending.pop(client_id, (None, None))
        if left_in == int(settings["released-round"]):
            states.kept[client_id] = state
    try:
        with local_precision(learner.device, config.run.precision):
            update = learner_at_round(learner, config, round_index).client_update(
                params, client, client_generator(config.seed, round_index, client_id),
                states.kept.get(client_id))
    except NotEnoughData:
        return config, None
    if learner.keeps_state and all(v.isfinite().all() for v in update.state.values()):
        if learner.commits_state:
            states.pending[client_id] = (round_index, update.state)
        else:
            states.kept[client_id] = update.state
    return config, update


def train(content: RecordDict, node: dict[str, Any]) -> RecordDict:
    """The client's update of the params it was sent: its delta, or with CKKS its
    `client_staged` delta times its `coefficient`, encrypted; its weight and mean local
    loss."""
    config, update = local_update(content["config"], node,
                                  content["arrays"].to_numpy_ndarrays())
    if update is None:
        return RecordDict({"metrics": MetricRecord({"skipped": 1})})
    metrics = MetricRecord({"weight": update.weight, "loss": update.loss})
    if config.aggregation.secure != "ckks":
        return RecordDict({"arrays": ArrayRecord(to_device(update.delta, HOST)),
                           "metrics": metrics})
    encrypted = encrypt(ckks_context(str(node["ckks-key"])),
                        client_staged(config, update.delta) * coefficient(config, update.weight),
                        config.aggregation.ckks_poly_modulus_degree // 2)
    return RecordDict({"encrypted": ConfigRecord({"ciphertexts": encrypted}),
                       "metrics": metrics})


def client_staged(config: Config, delta: dict[str, torch.Tensor]) -> torch.Tensor:
    """The client's delta, flat (float64), after the pipeline's client stages (the norm bound,
    user-level DP's clip), which run here since the server sees only the secure sum."""
    stage = build_client_stage(config)
    stacked, _ = stage.apply(Round({k: v[None] for k, v in delta.items()}, torch.ones(1)),
                             stage.init(delta))
    return flatten_rows(stacked.deltas)[0].double()


def coefficient(config: Config, weight: float) -> float:
    """The client's coefficient in the secure sum (`aggregate.coefficients`): its weight for
    a weighted mean, 1 under DP's fixed-denominator mean."""
    return float(coefficients(torch.tensor([weight]), fixed_denominator(config)))


def train_secagg_plus(content: RecordDict, node: dict[str, Any]) -> RecordDict:
    """A client update under Flower's SecAgg+ workflow (legacy FitIns in, FitRes out): the
    delta after the client stages (`client_staged`), weighted by `num_examples` (its
    `coefficient`: 1 under DP's fixed denominator), its weight and loss as metrics;
    `secaggplus_mod` quantizes and masks the delta before it leaves the node."""
    fitins = compat.recorddict_to_fitins(content, keep_input=True)
    config, update = local_update(dict(fitins.config), node,
                                  parameters_to_ndarrays(fitins.parameters))
    if update is None:
        raise ValueError("too little data for a local round")
    delta = unflatten(client_staged(config, update.delta),
                      {k: v[None] for k, v in update.delta.items()})
    fitres = FitRes(Status(Code.OK, "ok"), to_parameters(delta),
                    int(round(coefficient(config, update.weight))),
                    {"loss": update.loss, "weight": update.weight})
    return compat.fitres_to_recorddict(fitres, keep_input=True)


def decrypt_sum(content: RecordDict, node: dict[str, Any]) -> RecordDict:
    """As a key holder: the plaintext of an encrypted sum (never of one client's update:
    the server is trusted to send only sums, the honest-but-curious model)."""
    ciphertexts = list(content["encrypted"]["ciphertexts"])
    plain = decrypt(ckks_context(str(node["ckks-key"])), ciphertexts)
    return RecordDict({"arrays": ArrayRecord({"sum": plain})})


def evaluate(content: RecordDict, node: dict[str, Any]) -> RecordDict:
    """Meta-test on the node's own classes: adapt on each episode's support set, score its
    query set. A rating client is scored as a new user (`fedmeta.ratings`): adapted on its
    first `eval.shots` ratings, its (MAE, RMSE, NDCG@10) on all the later ones. A training
    client of own splits scores its own validation or test part (`own_split_correct`)."""
    client_id, client, *_, held = node_client(content["config"], node)
    config, learner = node_learner(content["config"], node, client)
    params = learner.on_device({k: owned(v) for k, v in
                                content["arrays"].to_torch_state_dict().items()})
    if held is not None:
        correct = own_split_correct(content["config"], node, config, learner, params, client_id,
                                    client, held)
        if correct is None:
            return RecordDict({"metrics": MetricRecord({"correct": [], "lost-state": 1})})
        return RecordDict({"metrics": MetricRecord({"correct": correct.int().tolist()})})
    sampler = episode_sampler(config, config.eval)
    if isinstance(sampler, ColdStartSampler):
        return RecordDict({"metrics": MetricRecord(new_user_scores(learner, params, client,
                                                                   sampler))})
    try:
        episodes = sampler.sample(client, config.flower.eval_episodes_per_client,
                                  seeded(config.seed, EVAL_STREAM, client_id))
    except NotEnoughData:
        return RecordDict({"metrics": MetricRecord({"accuracies": []})})
    accuracies = learner.accuracy(params, episodes).tolist()
    return RecordDict({"metrics": MetricRecord({"accuracies": accuracies})})


def own_split_correct(settings: Any, node: dict[str, Any], config: Config, learner: Learner,
                      params: Params, client_id: int, client: ClientData,
                      held: tuple[ClientData, ClientData]) -> torch.Tensor | None:
    """Which of its own validation or test examples (`settings["on"]`: "val", "test") the
    client gets right, as `fedmeta.evaluation.own_split_test` scores it, from its own stream:
    with the personal state it kept after round `settings["round"]`. Scoring its validation
    part, the node keeps that state and the one of `settings["selected-round"]` (the round
    model selection has chosen so far) and drops the others; the meta-test asks for the
    chosen round's, and None if the node no longer holds it (restarted, or its validation
    reply for that round lost) rather than another round's."""
    on, round_index = str(settings["on"]), int(settings["round"])
    states = personal_states(f"{node.get('run-id')}:{settings['fedmeta']}")
    validated = states.validated.setdefault(client_id, {})
    state = states.kept.get(client_id)
    if on == "val":
        validated[round_index] = state
        keep = {round_index, int(settings["selected-round"])}
        for dropped in set(validated) - keep:
            del validated[dropped]
    elif int(settings["selected-round"]):
        if round_index not in validated:
            return None
        state = validated[round_index]
    if state is None:  # never trained here: its state as the simulation's table starts it
        state = learner.on_device(learner.initial_state())
    return learner.personal_correct(params, state, client, held[on == "test"],
                                    config.eval.shots,
                                    seeded(*episode_stream(config.seed, on), client_id))


def new_user_scores(learner: Learner, params: Params, client: ClientData,
                    sampler: ColdStartSampler) -> dict[str, Any]:
    """The metrics of a held-out rating client: `scores` its (MAE, RMSE, NDCG@10) as a new
    user and `ratings` how many it scored; no scores if it has too few ratings."""
    if not sampler.eligible(client):
        return {"scores": [], "ratings": 0}
    support, query = sampler.split(client)
    return {"scores": list(user_scores(learner_predictor(learner, params)(support, query.x),
                                       query.y)), "ratings": len(query)}


HANDLERS: dict[str, Callable[[RecordDict, dict[str, Any]], RecordDict]] = {
    "describe": describe, "train": train, "train-secagg+": train_secagg_plus,
    "decrypt": decrypt_sum, "evaluate": evaluate, "vertical": vertical_node.handle}
