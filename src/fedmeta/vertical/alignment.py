"""Entity alignment by private set intersection: parties that hold different columns of
partly the same people learn which ids they share, and nothing else about each other's ids.

OpenMined's PSI (ECDH-PSI, after Meadows 1986 and Huberman, Franklin, Hogg 1999): the server
party sends its ids blinded by its secret key; the client party sends its own blinded by its
key; the server re-blinds the client's; the client, removing its blinding, finds which of its
own ids match. `reveal_intersection=True` lets the client learn *which* of its ids are shared,
and only that. The raw data structure (no Bloom filter) makes the intersection exact.

The label party aligns with each other party, each of the pair taking the client's role once,
so both learn the shared ids as ids of their own; with three or more parties the label party
then tells each party which of the ids they share are held by every party (a subset of what
that party already knows it shares). Every party orders the common ids the same way (sorted),
so a party's rows line up with everyone's without any id being sent in the clear.
"""

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import private_set_intersection.python as psi

from fedmeta.errors import UserError

# the raw data structure never reports a false match; its false-positive rate is unused
FALSE_POSITIVE_RATE = 1e-9


@dataclass(frozen=True)
class Transcript:
    """The serialized PSI messages of one direction: setup and response (server to client),
    request (client to server)."""

    setup: bytes
    request: bytes
    response: bytes

    @property
    def bytes(self) -> int:
        return len(self.setup) + len(self.request) + len(self.response)


def psi_request(client_ids: Sequence[str]) -> tuple[psi.client, bytes]:
    """The PSI client's side, first: its new key, and its ids blinded by it (the request)."""
    client = psi.client.CreateWithNewKey(True)
    return client, client.CreateRequest(list(client_ids)).SerializeToString()


def psi_serve(server_ids: Sequence[str], request: bytes, client_count: int
              ) -> tuple[bytes, bytes]:
    """The PSI server's side: its ids blinded by a new key of its own (the setup), and the
    client's request blinded again (the response)."""
    server = psi.server.CreateWithNewKey(True)
    setup = server.CreateSetupMessage(FALSE_POSITIVE_RATE, client_count, list(server_ids),
                                      psi.DataStructure.RAW).SerializeToString()
    return setup, server.ProcessRequest(_parsed(psi.Request, request)).SerializeToString()


def psi_intersect(client: psi.client, setup: bytes, response: bytes) -> list[int]:
    """The PSI client's side, last: the positions of its ids the server also holds."""
    return sorted(client.GetIntersection(_parsed(psi.ServerSetup, setup),
                                         _parsed(psi.Response, response)))


def shared_positions(client_ids: Sequence[str], server_ids: Sequence[str]
                     ) -> tuple[list[int], Transcript]:
    """One PSI run: the positions in `client_ids` of the ids `server_ids` also holds (the
    client's output), and the bytes exchanged. Each message crosses as bytes and is parsed on
    the other side, as between machines."""
    client, request = psi_request(client_ids)
    setup, response = psi_serve(server_ids, request, len(client_ids))
    return psi_intersect(client, setup, response), Transcript(setup, request, response)


def _parsed(message_type, data: bytes):
    message = message_type()
    message.ParseFromString(data)
    return message


@dataclass(frozen=True)
class Alignment:
    """Each party's rows of the common ids, in one order all parties share: party p's row
    `rows[p][i]` and party q's row `rows[q][i]` are the same person. `psi_bytes`: the bytes
    every PSI message took, all pairs and both directions."""

    rows: tuple[np.ndarray, ...]
    psi_bytes: int

    @property
    def size(self) -> int:
        return len(self.rows[0])


def check_ids(name: str, ids: Sequence[str]) -> None:
    """UserError (one line) unless `ids` are non-empty distinct strings."""
    if not len(ids):
        raise UserError(f"{name}: no ids")
    if not all(isinstance(i, str) and i for i in ids):
        raise UserError(f"{name}: ids must be non-empty strings")
    duplicate, count = Counter(ids).most_common(1)[0]
    if count > 1:
        raise UserError(f"{name}: id {duplicate!r} appears {count} times; ids must be unique")


def check_overlap(names: Sequence[str], shared: Sequence[int], common: int) -> None:
    """UserError (one line) if another party shares no id with the label party (`shared[k]`:
    how many party k + 1 does) or no id is common to all parties."""
    for name, count in zip(names[1:], shared):
        if not count:
            raise UserError(f"{name} shares no id with {names[0]} (the label party)")
    if not common:
        raise UserError(f"no id is held by all {len(names)} parties")


def common_ids(label_ids: Sequence[str], label_sides: Sequence[Sequence[int]]
               ) -> tuple[list[str], list[np.ndarray | None]]:
    """The label party's side once PSI ran with each other party (`label_sides[k]`: the
    positions of its ids that party k + 1 shares): the ids all parties hold, sorted, and for
    each other party a mask over the ids the two share, sorted, of those held by all (None with
    only two parties: all of them), which the label party sends it."""
    shared = [sorted(label_ids[i] for i in side) for side in label_sides]
    common = sorted(set.intersection(*(set(ids) for ids in shared)))
    return common, [np.isin(ids, common) if len(shared) > 1 else None for ids in shared]


def party_common_ids(ids: Sequence[str], positions: Sequence[int],
                     mask: np.ndarray | None) -> list[str]:
    """Another party's side: the ids it shares with the label party (its PSI output
    `positions`), sorted, kept where the label party's `mask` says all parties hold them."""
    shared = sorted(ids[i] for i in positions)
    return shared if mask is None else [i for i, keep in zip(shared, mask) if keep]


def mask_bytes(mask: np.ndarray | None) -> int:
    return 0 if mask is None else len(np.packbits(mask).tobytes())


def align(party_ids: Sequence[Sequence[str]], names: Sequence[str] | None = None) -> Alignment:
    """Align parties by their ids; party 0 is the label party. UserError (one line) on
    duplicate or empty ids, a party that shares no id with the label party, or no id common
    to all parties."""
    if len(party_ids) < 2:
        raise UserError(f"vertical learning needs at least 2 parties, got {len(party_ids)}")
    names = list(names or (f"party {p}" for p in range(len(party_ids))))
    for name, ids in zip(names, party_ids):
        check_ids(name, ids)
    label_ids = list(party_ids[0])
    psi_bytes, label_sides, other_sides = 0, [], []
    for ids in party_ids[1:]:
        label_side, forward = shared_positions(label_ids, ids)  # the label party as client
        other_side, backward = shared_positions(ids, label_ids)  # the other party as client
        psi_bytes += forward.bytes + backward.bytes
        label_sides.append(label_side)
        other_sides.append(other_side)
    common, masks = common_ids(label_ids, label_sides)
    check_overlap(names, [len(side) for side in label_sides], len(common))
    psi_bytes += sum(mask_bytes(mask) for mask in masks)
    rows = [rows_of(label_ids, common)] + [
        rows_of(list(ids), party_common_ids(ids, side, mask))
        for ids, side, mask in zip(party_ids[1:], other_sides, masks)]
    return Alignment(tuple(rows), psi_bytes)


def rows_of(ids: list[str], common: list[str]) -> np.ndarray:
    """The rows of `ids` holding `common`, in its order."""
    position = {i: row for row, i in enumerate(ids)}
    return np.array([position[i] for i in common], dtype=np.int64)
