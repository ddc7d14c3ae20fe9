"""fedmeta's ServerApp for a vertical run (`federation = "vertical"`): the coordinator of
`fedmeta.vertical.protocol` on Flower. It waits for `vertical.parties` SuperNodes, asks each
which party it is (`fedmeta.flower.vertical_node`), and relays the protocol's messages between
them, one `query.vertical` message to each party concerned per stage. It never holds the
parties' ids, columns, labels or models; it sees what crosses the cut (embeddings and their
gradients, protected as the config says) and the label party's scores. A party that fails or
does not answer in `flower.round_timeout` seconds stops the run: every party is needed.
"""

import logging
import time

from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid

from fedmeta.config import Config
from fedmeta.engine.rundir import RunDirectory
from fedmeta.errors import UserError
from fedmeta.flower.messages import config_message
from fedmeta.vertical.protocol import Message as PartyMessage
from fedmeta.vertical.protocol import Values, run_deployed

log = logging.getLogger("fedmeta.flower")
VERTICAL = "query.vertical"


class FlowerParties:
    """The parties' SuperNodes, by party number, reached through Flower's `Grid`."""

    def __init__(self, grid: Grid, config: Config) -> None:
        self.grid, self.config = grid, config
        deadline = time.monotonic() + config.flower.round_timeout
        while len(nodes := sorted(grid.get_node_ids())) < config.vertical.parties:
            if time.monotonic() > deadline:
                raise UserError(f"{len(nodes)} SuperNodes connected; vertical.parties is "
                                f"{config.vertical.parties}")
            time.sleep(0.5)
        self.nodes = dict(enumerate(nodes))  # until they say which party they are
        described = self.send("describe", {i: ({}, {}) for i in self.nodes})
        self.described = {int(values["party"]): values for values, _ in described.values()}
        if len(self.described) < len(described):
            raise UserError("two SuperNodes are the same party: give each its own `party`")
        self.nodes = {int(values["party"]): self.nodes[i]
                      for i, (values, _) in described.items()}

    def send(self, action: str, messages: dict[int, PartyMessage]) -> dict[int, PartyMessage]:
        """Each party's reply to its message (`vertical.protocol.Send`)."""
        sent = {Message(RecordDict({
            "config": ConfigRecord({**config_message(self.config, action=action), **values}),
            "arrays": ArrayRecord(arrays)}), dst_node_id=self.nodes[p], message_type=VERTICAL):
            p for p, (values, arrays) in messages.items()}
        by_node = {message.metadata.dst_node_id: p for message, p in sent.items()}
        replies = {}
        for reply in self.grid.send_and_receive(list(sent),
                                                timeout=self.config.flower.round_timeout):
            party = by_node[reply.metadata.src_node_id]
            if reply.has_error():
                raise UserError(f"vertical {action}: party {party} failed: "
                                f"{reply.error.reason}")
            replies[party] = (dict(reply.content["values"]),
                              dict(reply.content["arrays"].to_torch_state_dict()))
        missing = sorted(set(messages) - set(replies))
        if missing:
            raise UserError(f"vertical {action}: parties {missing} did not answer in "
                            f"{self.config.flower.round_timeout:g} s")
        return replies


def run_vertical(grid: Grid, config: Config) -> None:
    """A vertical run of `config` over the connected parties; its summary in a run
    directory."""
    if config.vertical.data != "files" or config.vertical.party_files:
        raise UserError("on Flower, each party's SuperNode reads its own CSV (node config "
                        "party-file): set vertical.data = 'files' and leave "
                        "vertical.party_files empty")
    parties = FlowerParties(grid, config)
    described: dict[int, Values] = parties.described
    run = RunDirectory.create(config)
    log.info("fedmeta on Flower, vertical: parties %s; run directory %s",
             ", ".join(f"{p} ({d['name']})" for p, d in sorted(described.items())), run.path)
    run.write_summary(run_deployed(config, described, parties.send))
