"""A SuperNode as one party of a vertical run (`fedmeta.vertical.protocol`): its node config
names its CSV (`party-file`, as `vertical.parties.read_party_csv` reads it) and its party
number (`party`: 0 is the label party, whose file has the `label` column; the others 1, 2,
...). Its long-lived worker (`node_worker`) keeps the party's state (`PartyRun`: PSI keys,
aligned rows, its part of the split network and optimizer) from message to message, for the
`RUNS_KEPT` runs messaged last; a restarted node has lost it, and the run stops.

A message's `config` record carries the fedmeta config (`fedmeta`), the protocol's `action`
and its values; its `arrays` record the tensors. The reply: `values` and `arrays`.
"""

from collections import OrderedDict
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, RecordDict

from fedmeta.config import Config
from fedmeta.errors import UserError
from fedmeta.vertical.parties import read_party_csv
from fedmeta.vertical.party import PartyRun
from fedmeta.vertical.protocol import answer

RUNS: OrderedDict[int, PartyRun] = OrderedDict()  # Flower run id -> this party's state
RUNS_KEPT = 4


def party_run(config_json: str, node: dict[str, Any]) -> PartyRun:
    """This node's party in the message's run, made (its CSV read) at the run's first
    message."""
    run = int(node["run-id"])
    if run not in RUNS:
        if "party-file" not in node or "party" not in node:
            raise UserError("a vertical party's node config needs party-file and party")
        index = int(node["party"])
        party = read_party_csv(str(node["party-file"]), labelled=index == 0)
        RUNS[run] = PartyRun(Config.model_validate_json(config_json), party, index)
    RUNS.move_to_end(run)
    while len(RUNS) > RUNS_KEPT:
        RUNS.popitem(last=False)
    return RUNS[run]


def handle(content: RecordDict, node: dict[str, Any]) -> RecordDict:
    """The party's reply to a protocol message."""
    values = dict(content["config"])
    config_json, action = str(values.pop("fedmeta")), str(values.pop("action"))
    arrays = dict(content["arrays"].to_torch_state_dict()) if "arrays" in content else {}
    values, arrays = answer(party_run(config_json, node), action, (values, arrays))
    return RecordDict({"values": ConfigRecord(values), "arrays": ArrayRecord(arrays)})
