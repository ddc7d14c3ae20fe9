"""fedmeta's Flower ServerApp with its nodes in this process: each message goes straight to
the node handler Flower would call in its simulation mode (node `partition-id`), so a
federation of the config's own clients runs without Flower's processes. The real thing, with
SuperLink and SuperNodes, is `test_flower_deployment`."""

from types import SimpleNamespace

from fedmeta.config import Config
from fedmeta.flower import node
from fedmeta.flower.messages import DESCRIBE, EVALUATE, TRAIN
from fedmeta.flower.server_app import FlowerFederation

HANDLER = {DESCRIBE: "describe", TRAIN: "train", EVALUATE: "evaluate"}  # as client_app's


def in_process(self, message_type, nodes, content):
    """`FlowerFederation.send` with node `p`'s reply computed here, as partition `p`."""
    contents = content if isinstance(content, list) else [content] * len(nodes)
    handler = node.HANDLERS[HANDLER[message_type]]
    return [SimpleNamespace(content=handler(record, {"partition-id": p}),
                            metadata=SimpleNamespace(src_node_id=p))
            for p, record in zip(nodes, contents)]


def in_process_federation(config: Config, nodes: int, monkeypatch) -> FlowerFederation:
    """The ServerApp's federation of `config` over `nodes` in-process nodes."""
    monkeypatch.setattr(FlowerFederation, "send", in_process)
    return FlowerFederation(SimpleNamespace(get_node_ids=lambda: list(range(nodes))), config)
