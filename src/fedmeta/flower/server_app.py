"""fedmeta's Flower ServerApp: the simulation's round loop, with each sampled client's update
computed on its own SuperNode.

The server first asks every node to describe itself (client id, size, input shape, classes,
role), orders the training nodes by client id and samples cohorts among them exactly as the
simulation samples clients, so a deployment over the clients' files reproduces a simulation
of them. Each round it sends the global params to the cohort and waits `flower.round_timeout`
seconds: clients that fail or do not answer in time are left out and logged, and the round
goes on if at least `server.min_clients` replied (else the model stays as it was). Held-out
nodes only evaluate: they adapt to episodes of their own classes and score them (a rating
client, a phone's user: adapted to its first ratings, its later ones scored), the
meta-validation nodes (`validation = true`) during training, the meta-test nodes
(`held-out = true`) once, at the end. With own splits (PFLlib's protocol) every training node
scores its own validation part during training and its own test part at the end.

With `aggregation.secure = "ckks"` the clients send their weighted updates encrypted, the
server adds the ciphertexts with the public context the clients described, and a key holder
(a client of the round) decrypts only the sum; the rest of the server pipeline (noise, the
server optimizer) runs on that mean.

A vertical config (`federation = "vertical"`) runs `fedmeta.flower.vertical_server` instead:
each SuperNode a party, the server the relay between them.
"""

import json
import logging
import time
from typing import Any

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.serverapp import Grid, ServerApp

from fedmeta.atomic import write_atomic
from fedmeta.build import LEARNERS, OWN_SPLITS, Datasets, build_experiment, check_deployable
from fedmeta.config import Config
from fedmeta.data import ClientData, FederatedDataset
from fedmeta.engine.cohort import CohortUpdates, concatenated
from fedmeta.engine.communication import round_bytes
from fedmeta.engine.rundir import RunDirectory
from fedmeta.engine.simulation import Gathered, Held, Simulation
from fedmeta.engine.training import train_and_summarize
from fedmeta.device import HOST, to_device
from fedmeta.errors import UserError
from fedmeta.engine.callbacks import BestRound, selection_metric
from fedmeta.evaluation import own_split_result, summarize
from fedmeta.flower.secagg import secagg_plus_sum
from fedmeta.flower.vertical_server import run_vertical
from fedmeta.flower.messages import (DECRYPT, DESCRIBE, EVALUATE, PING, TRAIN,
                                     config_from_run_config, config_message)
from fedmeta.params import Params, tree_stack, unflatten
from fedmeta.privacy.encryption import add_encrypted, load_context
from fedmeta.ratings import rating_result

log = logging.getLogger("fedmeta.flower")


class RemoteClients(FederatedDataset):
    """Clients as the server knows them: what their nodes described. Their data stays there."""

    name = "remote"

    def __init__(self, described: list[dict[str, Any]]) -> None:
        self.described = described

    @property
    def num_clients(self) -> int:
        return len(self.described)

    def client(self, i: int) -> ClientData:
        raise RuntimeError("a remote client's data lives on its SuperNode")

    def client_size(self, i: int) -> int:
        return int(self.described[i]["num-examples"])

    @property
    def input_shape(self) -> tuple[int, ...]:
        shapes = {tuple(node["input-shape"]) for node in self.described}
        if len(shapes) > 1:
            raise UserError(f"data error: the nodes' inputs differ in shape: {sorted(shapes)}")
        return shapes.pop() if shapes else ()

    @property
    def num_classes(self) -> int:
        return max((int(node["num-classes"]) for node in self.described), default=0)

    @property
    def num_items(self) -> int:
        """The item space the nodes' ratings index (0: no rating clients); one for all."""
        spaces = {int(node["num-items"]) for node in self.described}
        if len(spaces) > 1:
            raise UserError(f"data error: the nodes' ratings index different item spaces "
                            f"(num_items {sorted(spaces)})")
        return spaces.pop() if spaces else 0


class FlowerFederation(Simulation):
    """A `Simulation` whose clients are SuperNodes reached through Flower's `Grid`."""

    def __init__(self, grid: Grid, config: Config, context: Context | None = None) -> None:
        self.grid, self.config, self.context = grid, config, context
        check_deployable(config)
        described = self.describe_nodes()
        self.check_simulated_nodes(described)
        train, validation, test = ([n for n in described if n["role"] == role]
                                   for role in ("train", "val", "test"))
        train.sort(key=lambda n: n["client-id"])
        parted = [n["node-id"] for n in described if "held-examples" in n]
        if config.data.dataset in OWN_SPLITS:  # each training node holds its held-out parts
            validation, test = own_split_nodes(config, described, train)
        elif parted:
            raise UserError(f"nodes {parted} hold files of own splits (fashion-mnist's), and "
                            f"{config.data.dataset}'s clients hold none")
        if len(train) < config.server.min_clients:
            raise UserError(f"only {len(train)} training nodes connected; server.min_clients "
                            f"is {config.server.min_clients}")
        if config.attack.kind != "none" or config.faults.dropout or config.faults.deadline:
            raise UserError("attack.* and faults.* simulate malicious and unreliable clients "
                            "in `fedmeta run`; a deployment has real ones")
        if config.aggregation.compression != "none":
            raise UserError("aggregation.compression is simulated in `fedmeta run`; a "
                            "deployment's clients send their updates uncompressed")
        self.train_nodes = [n["node-id"] for n in train]
        self.held_out_nodes = {"val": [n["node-id"] for n in validation],
                               "test": [n["node-id"] for n in test]}
        public_key = next((n["ckks-public"] for n in train if "ckks-public" in n), None)
        if config.aggregation.secure == "ckks" and public_key is None:
            raise UserError("aggregation.secure = 'ckks' but no node holds a CKKS key "
                            "(node config ckks-key)")
        self.public_context = None if public_key is None else load_context(public_key)
        # the training nodes' label space and item space, the server's learner's too (a
        # global head's size, a rating model's item embeddings), sent with every message
        self.spaces = {"num-classes": RemoteClients(train).num_classes,
                       "num-items": RemoteClients(described).num_items}
        experiment = build_experiment(config, Datasets(
            RemoteClients(train), RemoteClients(validation), RemoteClients(test)))
        experiment.holds_client_states = False  # each node keeps its client's
        super().__init__(experiment)
        if experiment.held_out == "splits":  # before training, as the simulation's check_data
            experiment.learner.check_own_classes(max(
                (int(n["own-classes"]) for n in train), default=0))
        # each training client's last round whose reply a released round used, which a node
        # of a learner that `commits_state` needs to know (`node.local_update`)
        self.released: dict[int, int] = {}
        self.reported: list[int] = []  # the training clients whose updates this round has
        self.round_index = 0  # the last round run
        # the round the meta-validation scores chose so far: with own splits, whose personal
        # states the nodes keep for the meta-test (`node.own_split_correct`)
        self.selection = BestRound(selection_metric(config))
        self.check_validation()
        self.check_secagg_weights([int(n["num-examples"]) for n in train])

    def describe_nodes(self) -> list[dict[str, Any]]:
        """Every connected node's description, waiting up to `flower.round_timeout` for at
        least `server.min_clients` nodes."""
        deadline = time.monotonic() + self.config.flower.round_timeout
        while True:
            nodes = sorted(self.grid.get_node_ids())
            if len(nodes) >= self.config.server.min_clients or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        replies = self.send(DESCRIBE, nodes, RecordDict(
            {"config": ConfigRecord(config_message(self.config))}))
        return [{**dict(reply.content["node"]), "node-id": reply.metadata.src_node_id}
                for reply in replies]

    def check_simulated_nodes(self, described: list[dict[str, Any]]) -> None:
        """In Flower's simulation every client of the config is a SuperNode (its
        partition-id: training, then meta-validation, then meta-test clients): UserError,
        saying how many to ask for, unless the simulation runs exactly that many; or if the
        learner's clients keep personal state, which the simulation would lose (it moves
        clients between processes)."""
        counts = next((n["simulated-clients"] for n in described if "simulated-clients" in n),
                      None)
        algorithm = self.config.learner.algorithm
        if counts is not None and LEARNERS[algorithm].keeps_state:
            raise UserError(f"{algorithm}'s clients keep personal state, which Flower's "
                            "simulation would lose (it moves clients between processes): run "
                            "it with `fedmeta run`, or deploy it")
        nodes = len(self.grid.get_node_ids())
        if counts is not None and nodes != sum(counts):
            train, validation, test = counts
            raise UserError(f"Flower's simulation runs {nodes} SuperNodes and this config has "
                            f"{sum(counts)} clients, one per SuperNode ({train} training, "
                            f"{validation} meta-validation, {test} meta-test): run it with "
                            f"--federation-config 'num-supernodes={sum(counts)}'")

    def floor_seconds(self, probes: int) -> list[float]:
        """Seconds each of `probes` rounds of no-op messages (`ping`) to every training node
        took: Flower's own round trip, what no round can go below."""
        seconds = []
        for _ in range(probes):
            start = time.perf_counter()
            self.send(PING, self.train_nodes, RecordDict())
            seconds.append(time.perf_counter() - start)
        return seconds

    def send(self, message_type: str, nodes: list[int],
             content: RecordDict | list[RecordDict]) -> list[Message]:
        """Send `content` to each node (one record for all, or one per node); the replies that
        came back in time without error, in node order."""
        contents = content if isinstance(content, list) else [content] * len(nodes)
        messages = [Message(record, dst_node_id=node, message_type=message_type)
                    for node, record in zip(nodes, contents)]
        replies = {}
        for reply in self.grid.send_and_receive(messages,
                                                timeout=self.config.flower.round_timeout):
            if reply.has_error():
                log.warning("node %s failed on %s: %s", reply.metadata.src_node_id,
                            message_type, reply.error.reason)
            else:
                replies[reply.metadata.src_node_id] = reply
        if len(replies) < len(nodes):
            log.warning("%s: %d of %d nodes replied", message_type, len(replies), len(nodes))
        return [replies[node] for node in nodes if node in replies]

    def content(self, params: Params, **values: Any) -> RecordDict:
        return RecordDict({"arrays": ArrayRecord(to_device(params, HOST)),
                           "config": ConfigRecord(config_message(
            self.config, **self.spaces, **values))})

    def personal_content(self, params: Params, clients: list[int],
                         **values: Any) -> list[RecordDict]:
        """A record per training client of `clients`: the params a personalizing learner
        sends it (`Learner.client_params`), with `values`."""
        sent = self.experiment.learner.client_params(
            params, torch.tensor(clients, dtype=torch.int64))
        return [self.content({k: v[i] for k, v in sent.items()}, **values)
                for i in range(len(clients))]

    def train_replies(self, round_index: int, params: Params, cohort: list[int]) -> list[Message]:
        """Each cohort node's reply to the params the learner sends it: the global params in
        one record for all (serialized once per message, as Flower's strategies send it), or
        a personalizing learner's `client_params`, a record per node."""
        nodes, learner = [self.train_nodes[c] for c in cohort], self.experiment.learner
        if learner.personalized:
            content = self.personal_content(params, cohort, round=round_index)
        elif learner.commits_state:
            content = [self.content(params, round=round_index,
                                    **{"released-round": self.released.get(c, -1)})
                       for c in cohort]
        else:
            content = self.content(params, round=round_index)
        replies = self.send(TRAIN, nodes, content)
        return [r for r in replies if "skipped" not in r.content["metrics"]]

    def client_updates(self, round_index: int, params: Params, cohort: list[int],
                       states: Params | None = None) -> CohortUpdates:
        """The cohort nodes' updates (each node keeps its client's personal state)."""
        replies = self.train_replies(round_index, params, cohort)
        skipped = len(cohort) - len(replies)
        if not replies:
            model = self.experiment.learner.client_model(params)
            return concatenated([], {k: v[None] for k, v in model.items()}, skipped, {})
        metrics = [r.content["metrics"] for r in replies]
        position = {self.train_nodes[c]: i for i, c in enumerate(cohort)}
        device = self.experiment.learner.device
        return CohortUpdates(
            to_device(tree_stack(dict(r.content["arrays"].to_torch_state_dict())
                                 for r in replies), device),
            torch.tensor([float(m["weight"]) for m in metrics], device=device),
            torch.tensor([float(m["loss"]) for m in metrics], device=device), skipped,
            [position[r.metadata.src_node_id] for r in replies])

    def round(self, round_index: int, params: Params,
              server_state: dict[str, Any]) -> tuple[Params, dict[str, Any], dict[str, Any]]:
        """`Simulation.round`, noting which clients' replies a released round used."""
        self.reported, self.round_index = [], round_index
        params, server_state, metrics = super().round(round_index, params, server_state)
        if "aborted" not in metrics:
            self.released.update(dict.fromkeys(self.reported, round_index))
        return params, server_state, metrics

    def gather(self, round_index: int, params: Params,
               states: Params | None = None) -> Gathered:
        """The round's contributions from the cohort's nodes: each one's update (the
        simulation's `reports`, with `client_updates` from the nodes), or with secure
        aggregation only their sum, from CKKS ciphertexts or SecAgg+'s masked vectors."""
        secure = self.config.aggregation.secure
        if secure == "none":
            gathered = super().gather(round_index, params, states)
            self.reported = gathered.rows.clients.tolist()
            return gathered
        cohort = self.cohort(round_index).tolist()
        if secure == "ckks":
            reported, total = self.encrypted_sum(round_index, params, cohort)
        else:
            reported, total = secagg_plus_sum(
                self.grid, self.context, self.config, round_index, params,
                [self.train_nodes[c] for c in cohort],
                config_message(self.config, round=round_index, **self.spaces))
        metrics = {"round": round_index, "clients": len(reported),
                   "skipped": len(cohort) - len(reported),
                   **round_bytes(self.config, params, len(cohort), len(reported))}
        device = self.experiment.learner.device
        return Gathered(torch.tensor([m["weight"] for m in reported], device=device),
                        torch.tensor([m["loss"] for m in reported], device=device), metrics,
                        total=to_device(total, device) if total else
                        {k: torch.zeros_like(v) for k, v in params.items()})

    def encrypted_sum(self, round_index: int, params: Params,
                      cohort: list[int]) -> tuple[list[dict[str, float]], Params | None]:
        """The replying clients' weights and losses, and the sum of their contributions: the
        server adds their ciphertexts and a key holder (a client of the round) decrypts only
        that sum, and only for a round that `releases` it (None otherwise); no client counts
        if the key holder does not answer."""
        replies = self.train_replies(round_index, params, cohort)
        reported = [{"weight": float(r.content["metrics"]["weight"]),
                     "loss": float(r.content["metrics"]["loss"])} for r in replies]
        if not replies or not self.releases(len(replies)):
            return reported, None
        encrypted = add_encrypted(self.public_context, (
            list(r.content["encrypted"]["ciphertexts"]) for r in replies))
        decrypted = self.send(DECRYPT, [replies[0].metadata.src_node_id], RecordDict(
            {"encrypted": ConfigRecord({"ciphertexts": encrypted})}))
        if not decrypted:
            log.warning("round %d: the key holder did not decrypt the sum", round_index)
            return [], None
        return reported, unflatten(decrypted[0].content["arrays"].to_torch_state_dict()["sum"],
                                   {k: v[None] for k, v in params.items()})

    def evaluate(self, params: Params, episodes: int, per_client: bool = False,
                 on: Held = "test", states: Params | None = None) -> dict[str, Any]:
        """Federated evaluation: every held-out node `on` ("test": meta-test, "val":
        meta-validation) adapts to episodes of its own classes, or a rating client as a new
        user to its first ratings (no node keeps personal `states`); with own splits, every
        training node scores its own part `on` (`own_split_evaluation`)."""
        if self.experiment.held_out == "splits":
            return self.own_split_evaluation(params, per_client, on)
        nodes = self.held_out_nodes[on]
        if not nodes:
            return {}
        replies = [r.content["metrics"] for r in self.send(EVALUATE, nodes,
                                                           self.content(params))]
        if self.config.data.rates:
            scored = [r for r in replies if len(r["scores"])]
            if not scored:
                return {}
            result = rating_result([list(r["scores"]) for r in scored], len(replies),
                                   sum(int(r["ratings"]) for r in scored))
            return {f"{on}_{key}": value for key, value in result.as_dict(per_client).items()}
        accuracies = [torch.tensor(list(r["accuracies"])) for r in replies]
        accuracies = [a for a in accuracies if len(a)]
        if not accuracies:
            return {}
        result = summarize(accuracies, [float(a.mean()) for a in accuracies])
        return {f"{on}_{key}": value for key, value in result.as_dict(per_client).items()}


    def own_split_evaluation(self, params: Params, per_client: bool,
                             on: Held) -> dict[str, Any]:
        """`fedmeta.evaluation.own_split_test` on the training nodes: each scores its own
        validation (`on` = "val") or test part with the params the learner sends it and the
        personal state it kept after the round scored (the last one run, or for the
        meta-test the one model selection chose); the scores of its validation parts feed
        that selection here, as they feed the run's."""
        selected, learner = self.selection.round, self.experiment.learner
        values = {"on": on, "round": self.round_index if on == "val" or not selected
                  else selected, "selected-round": selected}
        if learner.personalized:
            content = self.personal_content(params, list(range(len(self.train_nodes))), **values)
        else:
            content = self.content(params, **values)
        replies = [r.content["metrics"] for r in self.send(EVALUATE, self.train_nodes, content)]
        lost = sum(int(r.get("lost-state", 0)) for r in replies)
        if lost:
            log.warning("%d nodes no longer hold their state of round %d (restarted?): the "
                        "meta-test leaves them out", lost, values["round"])
        correct = [torch.tensor(list(r["correct"]), dtype=torch.bool) for r in replies]
        correct = [c for c in correct if len(c)]
        if not correct:
            return {}
        result, pooled = own_split_result(correct)
        metrics = {f"{on}_{key}": value for key, value in
                   {**result.as_dict(per_client), "pooled_accuracy": pooled}.items()}
        if on == "val":
            self.selection(self.round_index, params, {}, metrics)
        return metrics


def own_split_nodes(config: Config, described: list[dict[str, Any]],
                    train: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], ...]:
    """The training nodes as holders of their validation parts and of their test parts (each
    node's `held-examples`); UserError if a node is held out or holds no own splits."""
    misplaced = [n["node-id"] for n in described if n["role"] != "train"
                 or "held-examples" not in n]
    if misplaced:
        raise UserError(f"{config.data.dataset}'s held-out data are each client's own splits: "
                        f"nodes {misplaced} are held out or hold none; give each node its "
                        "client's file from `fedmeta export-clients`, no held-out nodes")
    return tuple([{**n, "num-examples": n["held-examples"][part]} for n in train]
                 for part in (0, 1))


app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    config = config_from_run_config(context.run_config)
    if config.federation == "vertical":
        return run_vertical(grid, config)
    federation = FlowerFederation(grid, config, context)
    run = RunDirectory.create(config)
    log.info("fedmeta on Flower: %d training nodes, %d meta-validation, %d meta-test; run "
             "directory %s", len(federation.train_nodes), len(federation.held_out_nodes["val"]),
             len(federation.held_out_nodes["test"]), run.path)
    if config.flower.floor_probes:
        seconds = federation.floor_seconds(config.flower.floor_probes)
        write_atomic(run.path / "flower_floor.json", json.dumps({"seconds": seconds}))
        log.info("Flower's floor: no-op rounds of %s s", ", ".join(f"{s:.2f}" for s in seconds))
    train_and_summarize(federation, run, progress=False)
