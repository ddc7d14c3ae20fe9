"""Simulated unreliable clients: dropouts, and stragglers that miss a round's deadline.

Whether a sampled client drops out, and how long its round takes, are drawn from generators
seeded by (seed, round, client), so they cost O(cohort) and a resumed run draws the same.
A client's round time, in units of the median client's, is log-normal: a slowness of its own
(the same every round: slow phones stay slow) times a per-round jitter, each of log-std
`spread / sqrt(2)` (`spread` together). The round waits `deadline` such units; clients slower
than that are stragglers, left out as if they had dropped (their work is lost).
"""

import math
from dataclasses import dataclass

import torch

from fedmeta.config import Config
from fedmeta.seeding import FAULT_STREAM, seeded


@dataclass(frozen=True)
class Faults:
    dropout: float
    deadline: float
    spread: float
    seed: int

    @classmethod
    def from_config(cls, config: Config) -> "Faults | None":
        faults = config.faults
        if not faults.dropout and not faults.deadline:
            return None
        return cls(faults.dropout, faults.deadline, faults.straggler_spread, config.seed)

    def round_time(self, round_index: int, client: int) -> float:
        """The client's simulated round time, in units of the median client's."""
        slowness = torch.randn((), generator=seeded(self.seed, FAULT_STREAM, client))
        jitter = torch.randn((), generator=seeded(self.seed, FAULT_STREAM, round_index, client, 1))
        return math.exp(self.spread * float(slowness + jitter) / math.sqrt(2))

    def absent(self, round_index: int, cohort: list[int]) -> dict[int, str]:
        """The cohort's clients that do not report this round, each with the reason."""
        absent = {}
        for client in cohort:
            draw = torch.rand((), generator=seeded(self.seed, FAULT_STREAM, round_index, client))
            if float(draw) < self.dropout:
                absent[client] = "dropped out"
                continue
            if self.deadline:
                time = self.round_time(round_index, client)
                if time > self.deadline:
                    absent[client] = f"straggler: round time {time:.2f} > deadline {self.deadline:g}"
        return absent
