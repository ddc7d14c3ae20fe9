"""fedmeta's Flower ServerApp with its nodes in this process: each message goes straight to
the node handler Flower would call, with the node config it would pass (a `partition-id` of
its simulation mode, or a deployed node's client file), so a federation runs without Flower's
processes. The real thing, with SuperLink and SuperNodes, is `test_flower_deployment`."""

from types import SimpleNamespace

from fedmeta.config import Config
from fedmeta.flower import node
from fedmeta.flower.messages import DESCRIBE, EVALUATE, TRAIN
from fedmeta.flower.server_app import FlowerFederation

HANDLER = {DESCRIBE: "describe", TRAIN: "train", EVALUATE: "evaluate"}  # as client_app's


def in_process(node_configs: list[dict]):
    """`FlowerFederation.send` with node `p`'s reply computed here, with `node_configs[p]`."""
    def send(self, message_type, nodes, content):
        contents = content if isinstance(content, list) else [content] * len(nodes)
        handler = node.HANDLERS[HANDLER[message_type]]
        return [SimpleNamespace(content=handler(record, node_configs[p]),
                                metadata=SimpleNamespace(src_node_id=p))
                for p, record in zip(nodes, contents)]
    return send


def in_process_federation(config: Config, nodes: int | list[dict],
                          monkeypatch) -> FlowerFederation:
    """The ServerApp's federation of `config` over in-process nodes: `nodes` partitions of
    Flower's simulation, or nodes of these node configs (a deployed node's `data-path`...)."""
    node_configs = ([{"partition-id": p} for p in range(nodes)] if isinstance(nodes, int)
                    else nodes)
    monkeypatch.setattr(FlowerFederation, "send", in_process(node_configs))
    return FlowerFederation(SimpleNamespace(get_node_ids=lambda: list(range(len(node_configs)))),
                            config)
