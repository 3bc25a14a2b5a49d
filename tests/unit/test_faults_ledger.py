"""The fault trials' ledger finds every kind of damage it reports."""

from loadtest.faults.ledger import compare

ACKED = {0: [(0, b"a"), (1, b"b"), (2, b"c")], 1: [(0, b"x")]}


def test_exact_read_back_is_clean():
    t = compare(ACKED, {0: [(0, b"a"), (1, b"b"), (2, b"c")], 1: [(0, b"x")]})
    assert t.clean and t.acked == 4 and t.unacked == 0


def test_lost_duplicated_reordered_and_unacked_are_counted():
    t = compare(ACKED, {0: [(0, b"a"), (1, b"c"), (2, b"b"), (3, b"b"), (4, b"z")], 1: []})
    assert t.lost == 1  # x
    assert t.duplicated == 1  # b twice
    assert t.out_of_order == 2  # c and b not at their acknowledged offsets
    assert t.unacked == 1  # z: present, never acknowledged: allowed
    assert not t.clean


def test_aborted_or_partly_visible_transactions_are_forbidden():
    t = compare({}, {0: [(0, b"ab1"), (1, b"d1")]}, forbidden={b"ab1"}, groups=[{b"d1", b"d2"}, {b"e1"}])
    assert t.forbidden == 2
    assert compare({}, {0: [(0, b"d1"), (1, b"d2")]}, groups=[{b"d1", b"d2"}]).clean
