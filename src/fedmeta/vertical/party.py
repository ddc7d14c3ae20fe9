"""One party of a deployed vertical run (`fedmeta.vertical.protocol`), as it runs on its own
machine. Its ids, its columns and (the label party's) its labels never leave it: what it sends
is PSI messages, then each step either its cut-layer embeddings of a batch (another party) or
the gradients for the others' embeddings and its loss (the label party), and at the end the
label party's scores of the held-out rows.

What the parties agree on in the clear: the run's config and seed (so every party splits the
aligned rows into training and held-out rows the same way, draws the same shuffles and
initializes its part of the split network as the simulation does), each party's column count
and the number of classes. What a party draws protection noise from is its own: a generator
seeded from the operating system's entropy, which no other party can regenerate (the
simulation, `vertical.tabular`, draws it from the run's seed, for reproducible experiments).
"""

from collections.abc import Sequence

import numpy as np
import torch

from fedmeta.config import Config
from fedmeta.errors import UserError
from fedmeta.optim import OPTIMIZERS
from fedmeta.seeding import seeded
from fedmeta.vertical.alignment import (check_ids, common_ids, party_common_ids, psi_intersect,
                                        psi_request, psi_serve, rows_of)
from fedmeta.vertical.parties import Party
from fedmeta.vertical.protection import Protection
from fedmeta.vertical.split import (SplitState, batch_mean, crossing_embedding, embed,
                                    label_loss, label_side, optimizer_step, send_up,
                                    top_probabilities)
from fedmeta.vertical.tabular import (held_out_split, initial_network, protections, scores,
                                      standardized)


class PartyRun:
    """Party `index` (0: the label party) of one run of `config`, holding `party`'s data."""

    def __init__(self, config: Config, party: Party, index: int) -> None:
        if (index == 0) != (party.y is not None):
            raise UserError(f"{party.name}: party 0 is the label party and only it holds "
                            "labels")
        check_ids(party.name, party.ids)
        self.config, self.party, self.index = config, party, index
        self.noise = torch.Generator()
        self.noise.seed()  # private: the OS's entropy, not a seed any other party knows
        self.up, self.down = protections(config.vertical)
        self.clients, self.positions = {}, {}
        self.rows: np.ndarray | None = None
        self.step_index = 0

    def describe(self) -> dict:
        """What the party tells the coordinator: its index, name, id count, column count and
        (the label party) the number of classes."""
        return {"party": self.index, "name": self.party.name, "rows": len(self.party.ids),
                "columns": int(self.party.x.shape[1]),
                **({"classes": int(self.party.y.max()) + 1} if self.index == 0 else {})}

    # entity alignment (vertical.alignment's steps, one message each)
    def psi_requests(self, partners: Sequence[int]) -> dict[int, bytes]:
        """This party as PSI client of each partner: its blinded ids."""
        requests = {}
        for partner in partners:
            self.clients[partner], requests[partner] = psi_request(self.party.ids)
        return requests

    def psi_responses(self, requests: dict[int, tuple[bytes, int]]
                      ) -> dict[int, tuple[bytes, bytes]]:
        """This party as PSI server of each partner's request (and the partner's id count)."""
        return {partner: psi_serve(self.party.ids, request, count)
                for partner, (request, count) in requests.items()}

    def psi_outputs(self, answers: dict[int, tuple[bytes, bytes]]) -> None:
        """This party's PSI outputs: the positions of its ids each partner also holds."""
        self.positions = {partner: psi_intersect(self.clients.pop(partner), *answer)
                          for partner, answer in sorted(answers.items())}

    def common(self) -> tuple[dict[int, int], dict[int, np.ndarray | None]]:
        """The label party: aligns itself on the ids all parties hold, and returns how many it
        shares with each other party and the mask each is sent (`alignment.common_ids`)."""
        partners = sorted(self.positions)
        common, masks = common_ids(self.party.ids, [self.positions[p] for p in partners])
        self.rows = rows_of(self.party.ids, common)
        return ({p: len(self.positions[p]) for p in partners}, dict(zip(partners, masks)))

    def align(self, mask: np.ndarray | None) -> None:
        """Another party: aligns itself on the shared ids the label party's mask keeps."""
        self.rows = rows_of(self.party.ids, party_common_ids(self.party.ids,
                                                            self.positions[0], mask))

    # training
    def start(self, columns: list[int], classes: int) -> tuple[int, int]:
        """Split its aligned rows, standardize its columns on its training rows, build its
        part of the split network; returns the training and held-out row counts."""
        vertical, seed = self.config.vertical, self.config.seed
        if self.rows is None:
            raise UserError(f"{self.party.name}: training asked for before alignment")
        test, train = held_out_split(len(self.rows), vertical.test_fraction, seed)
        x = self.party.x[self.rows]
        self.x_train, self.x_test = standardized(x[train], x[test])
        if self.index == 0:
            y = self.party.y[self.rows]
            self.y_train, self.y_test = torch.from_numpy(y[train]), y[test]
        self.network = initial_network(vertical, columns, classes, vertical.embedding, seed)
        bottoms, top = self.network.init_params()
        self.params = [bottoms[self.index], *([top] if self.index == 0 else [])]
        self.optimizer = OPTIMIZERS[vertical.optimizer](vertical.lr)
        self.states = [self.optimizer.init(p) for p in self.params]
        self.shuffles, self.batches = seeded(seed, 1), []
        return len(train), len(test)

    def batch(self, step: int) -> torch.Tensor:
        """Training rows of step `step` (0, 1, ... in order): each epoch's batches from one
        shuffle of the generator the parties share."""
        if step != self.step_index:
            raise UserError(f"{self.party.name}: step {step} asked for, step "
                            f"{self.step_index} expected")
        if not self.batches:
            order = torch.randperm(len(self.x_train), generator=self.shuffles)
            self.batches = list(order.split(self.config.vertical.batch_size))
        self.step_index += 1
        return self.batches.pop(0)

    def embeddings(self, step: int) -> torch.Tensor:
        """Another party: its embedding of step `step`'s rows, as it crosses."""
        rows = self.batch(step)
        sent, self.pull = send_up(self.network.bottoms[self.index], self.params[0],
                                  self.x_train[rows], self.up, self.noise)
        self.batch_rows = len(rows)
        return sent.detach()

    def pull_back(self, gradient: torch.Tensor) -> None:
        """Another party: the gradient it received for its last embedding, through its bottom
        model, and its optimizer's step."""
        grads = batch_mean(self.pull(gradient)[0], self.batch_rows)
        optimizer_step(self.optimizer, self.params, [grads], self.states)

    def label_step(self, step: int, received: list[torch.Tensor]
                   ) -> tuple[float, list[torch.Tensor]]:
        """The label party: the loss of step `step` on its embedding and the others'
        `received`, its own optimizer step, and the gradient each other party is sent."""
        rows = self.batch(step)
        y, top = self.y_train[rows], self.network.top
        own, pull = embed(self.network.bottoms[0], self.params[0], self.x_train[rows],
                          Protection())
        head_grads, loss, sent = label_side(lambda t, hs: label_loss(top, t, hs, y),
                                            self.params[1], [own, *received], self.down,
                                            self.noise)
        optimizer_step(self.optimizer, self.params,
                       [batch_mean(pull(sent[0])[0], len(y)), batch_mean(head_grads, len(y))],
                       self.states)
        return float(loss), [g.detach() for g in sent[1:]]

    # scoring
    def held_out_embeddings(self) -> torch.Tensor:
        """Another party: its embedding of the held-out rows, as it crosses."""
        return crossing_embedding(self.network.bottoms[self.index], self.params[0],
                                  self.x_test, self.up, self.noise)

    def scores(self, received: list[torch.Tensor]) -> dict[str, float]:
        """The label party: ROC AUC and accuracy on its held-out labels."""
        state = SplitState([self.params[0]], self.params[1])
        return scores(top_probabilities(self.network, state, self.x_test, received),
                      self.y_test)
