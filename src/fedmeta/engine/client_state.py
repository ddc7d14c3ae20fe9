"""The clients' personal states as a simulation keeps them on their behalf: one row per
training client of each state tensor ([N, ...]: Ditto's personal models, FedPer's heads,
SCAFFOLD's control variates), so memory is the states' and nothing more. A round reads its
cohort's rows and writes back the rows of the clients that reported; the table lives in the
run's state under `CLIENTS`, so checkpoints hold it and a resumed run goes on from it."""

import torch

from fedmeta.learners.base import Learner
from fedmeta.params import Params

CLIENTS = "clients"  # the run state's key of the table


def initial_states(learner: Learner, num_clients: int) -> Params:
    """Every client's `Learner.initial_state`, stacked [N, ...] (empty: the learner keeps none)."""
    one = learner.initial_state()
    return {k: v.expand(num_clients, *v.shape).clone() for k, v in one.items()}


def written(states: Params, clients: torch.Tensor, rows: Params) -> Params:
    """The table with `clients`' rows (int64 [C]) replaced by `rows` ([C, ...]): a new table,
    so a table held elsewhere (the selected round's) stays as it was."""
    if not len(clients):
        return states
    return {k: v.index_copy(0, clients.to(v.device), rows[k].to(v)) for k, v in states.items()}
