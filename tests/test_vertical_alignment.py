"""Entity alignment by PSI: the intersection against Python's set intersection, no raw id in
the bytes a party receives, and bad input as one-line UserErrors."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from fedmeta.errors import UserError
from fedmeta.vertical.alignment import align, shared_positions

ID = st.text("abcdef0123456789-", min_size=1, max_size=12)
PARTY = st.lists(ID, min_size=1, max_size=40, unique=True)


@settings(max_examples=40, deadline=None)
@given(st.lists(PARTY, min_size=2, max_size=4))
def test_rows_line_up_on_exactly_the_common_ids(parties):
    common = set.intersection(*map(set, parties))
    if not common:
        with pytest.raises(UserError):
            align(parties)
        return
    alignment = align(parties)
    ordered = [[ids[row] for row in rows] for ids, rows in zip(parties, alignment.rows)]
    assert all(column == ordered[0] for column in ordered)  # row i is one person everywhere
    assert sorted(ordered[0]) == sorted(common) and len(ordered[0]) == len(common)


def test_no_raw_id_crosses_to_the_other_party():
    rng = np.random.default_rng(0)
    people = [f"patient-{n:06d}" for n in rng.permutation(1000)[:300]]
    client, server = people[:200], people[100:]
    positions, transcript = shared_positions(client, server)
    assert [client[p] for p in positions] == sorted(set(client) & set(server),
                                                    key=client.index)
    to_client = transcript.setup + transcript.response  # what the client receives
    to_server = transcript.request
    assert not [i for i in server if i.encode() in to_client]
    assert not [i for i in client if i.encode() in to_server]


@pytest.mark.parametrize("parties, message", [
    ([["a", "b", "a"], ["a"]], "party 0: id 'a' appears 2 times"),
    ([["a", "b"], ["c", "d"]], "party 1 shares no id with party 0"),
    ([["a", "b"], ["a", "c"], ["b", "c"]], "no id is held by all 3 parties"),
    ([["a", "b"], []], "party 1: no ids"),
    ([["a"]], "at least 2 parties"),
])
def test_bad_ids_are_one_line_user_errors(parties, message):
    with pytest.raises(UserError, match=message) as error:
        align(parties)
    assert "\n" not in str(error.value)
