"""fedmeta's Flower ClientApp: a SuperNode's client trains on its own data
(`fedmeta.flower.node`).

Flower starts a fresh process for each message a deployed SuperNode receives, so this module
imports neither torch nor the node's code: it forwards each message to the node's long-lived
worker (`fedmeta.flower.node_worker`), which keeps them loaded. In Flower's simulation (nodes
with a `partition-id`, run in long-lived actors) the handlers run in-process. A vertical
run's party answers `query.vertical` (`fedmeta.flower.vertical_node`). SecAgg+'s
`secaggplus_mod` masks a reply here, before it leaves the node; `ping` is a no-op, for
measuring Flower's own round-trip floor (`flower.floor_probes`).
"""

from typing import Any

from flwr.app import Context, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.client.mod import secaggplus_mod

from fedmeta.flower.node_worker import forward

app = ClientApp()


def answer(kind: str, msg: Message, context: Context) -> Message:
    """The reply of handler `kind` of `fedmeta.flower.node` to `msg`, given the node's config
    and the message's run (a client's personal state is the run's)."""
    node: dict[str, Any] = {**context.node_config, "run-id": int(msg.metadata.run_id)}
    if "data-path" in node or "party-file" in node:  # a deployed node
        content = forward(kind, msg.content, node)
    else:
        from fedmeta.flower.node import HANDLERS  # Flower's simulation: in this process
        content = HANDLERS[kind](msg.content, node)
    return Message(content, reply_to=msg)


@app.query("describe")
def describe(msg: Message, context: Context) -> Message:
    return answer("describe", msg, context)


@app.train("update")
def train(msg: Message, context: Context) -> Message:
    return answer("train", msg, context)


@app.train(mods=[secaggplus_mod])
def train_secagg_plus(msg: Message, context: Context) -> Message:
    """Under Flower's SecAgg+ workflow (legacy FitIns in, FitRes out)."""
    return answer("train-secagg+", msg, context)


@app.query("decrypt")
def decrypt_sum(msg: Message, context: Context) -> Message:
    return answer("decrypt", msg, context)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    return answer("evaluate", msg, context)


@app.query("vertical")
def vertical(msg: Message, context: Context) -> Message:
    """A party's step of a vertical run (`fedmeta.flower.vertical_node`)."""
    return answer("vertical", msg, context)


@app.query("ping")
def ping(msg: Message, context: Context) -> Message:
    return Message(RecordDict(), reply_to=msg)
