"""The history of direct messages (direct_history) on both backends: a copy per account
taking part, read in windows like a room's, targets, retention, erasure, deletion."""

import pytest

from chatd.core.errors import ChatError
from chatd.core.ids import format_message_id
from chatd.storage import transactions as storage
from chatd.storage.rows import HistoryMark
from tests.storage.test_storage import backend, connection, db_setting  # noqa: F401 (fixtures)


def commit(opened, body, *arguments):
    """Run one named transaction and commit it, as the writer would."""
    from chatd.storage import backends

    with backends.transaction(opened):
        return body(opened, *arguments)


def msgid(number: int) -> str:
    return format_message_id((number + 1) * 1000, 7, number)


@pytest.fixture
def talk(connection):  # noqa: F811 (the fixture imported above)
    """alice and bob (accounts) with m0..m5 between them, alice writing the even ones,
    sent at 1000, 2000, ... ms; carol is an account too."""
    for name in ("alice", "bob", "carol"):
        commit(connection, storage.create_user, name, "hash", 0)
    for number in range(6):
        sender, recipient = ("alice", "bob") if number % 2 == 0 else ("bob", "alice")
        kept = commit(
            connection, storage.record_direct_message, sender, recipient, f"m{number}",
            (number + 1) * 1000, msgid(number), ("alice", "bob"),
        )
        assert kept == 2
    return connection


def texts(rows):
    return [row.text for row in rows]


def test_each_side_has_the_whole_conversation(talk):
    """alice's conversation with bob and bob's with alice: the same six, oldest first,
    each with its sender, recipient, time and id."""
    for owner, peer in (("alice", "bob"), ("bob", "alice")):
        rows = storage.direct_history_window(talk, owner, peer, None, None, 100, True)
        assert texts(rows) == [f"m{n}" for n in range(6)]
        assert (rows[1].sender, rows[1].recipient, rows[1].sent_at, rows[1].msgid) == (
            "bob", "alice", 2000, msgid(1)
        )
    assert storage.direct_history_window(talk, "carol", "alice", None, None, 100, True) == []
    assert storage.direct_history_window(talk, "nobody", "alice", None, None, 100, True) == []


def test_windows_marks_and_around(talk):
    """By id and by time, both ends, marks excluded but AROUND's; an unknown id: nothing."""
    def window(*arguments, **options):
        return texts(storage.direct_history_window(talk, "alice", "bob", *arguments, **options))

    assert window(HistoryMark(msgid=msgid(2)), None, 10, False) == ["m3", "m4", "m5"]
    assert window(HistoryMark(time=3000), None, 1, False) == ["m3"]
    assert window(None, HistoryMark(msgid=msgid(4)), 2, True) == ["m2", "m3"]
    assert window(HistoryMark(msgid=msgid(0)), HistoryMark(msgid=msgid(5)), 100, False) == [
        "m1", "m2", "m3", "m4"
    ]
    assert window(HistoryMark(msgid="0000000000000000beef"), None, 10, False) == []
    around = storage.direct_history_around(talk, "alice", "bob", HistoryMark(msgid=msgid(3)), 3)
    assert texts(around) == ["m2", "m3", "m4"]


def test_pages_for_the_line_door(talk):
    """The bounds of the last n, then the rows between them, in pages."""
    low, high = storage.direct_history_bounds(talk, "bob", "alice", 4)
    rows = storage.direct_history_between(talk, "bob", "alice", low, high, 3)
    assert texts(rows) == ["m2", "m3", "m4"]
    rows = storage.direct_history_between(talk, "bob", "alice", rows[-1].id + 1, high, 3)
    assert texts(rows) == ["m5"]
    assert storage.direct_history_bounds(talk, "carol", "alice", 4) is None


def test_targets_are_conversations_by_their_last_message(talk):
    """Strictly between the times, earliest first, at most the limit."""
    commit(talk, storage.record_direct_message, "carol", "alice", "hi", 9000, msgid(8),
           ("carol", "alice"))
    assert storage.direct_history_targets(talk, "alice", 0, 10_000, 10) == [
        ("bob", 6000), ("carol", 9000)
    ]
    assert storage.direct_history_targets(talk, "alice", 0, 10_000, 1) == [("bob", 6000)]
    assert storage.direct_history_targets(talk, "alice", 6000, 10_000, 10) == [("carol", 9000)]
    assert storage.direct_history_targets(talk, "bob", 0, 10_000, 10) == [("alice", 6000)]


def test_a_guest_side_keeps_no_copy_and_oneself_one(talk):
    """Owners that are no account keep nothing; a DM to oneself is one row."""
    kept = commit(talk, storage.record_direct_message, "alice", "zed", "to a guest", 7000,
                  msgid(6), ("alice",))
    assert kept == 1
    assert texts(storage.direct_history_window(talk, "alice", "zed", None, None, 9, True)) == [
        "to a guest"
    ]
    kept = commit(talk, storage.record_direct_message, "alice", "alice", "me", 8000, msgid(7),
                  ("alice", "alice"))
    assert kept == 1


def test_a_deleted_sender_cannot_record(talk):
    """The sender among the owners must still be the account: forbidden once deleted."""
    commit(talk, storage.delete_user, "carol", 0)
    with pytest.raises(ChatError) as refused:
        commit(talk, storage.record_direct_message, "carol", "alice", "x", 9000, msgid(9),
               ("carol", "alice"))
    assert refused.value.code == "forbidden"
    assert storage.direct_history_targets(talk, "alice", 0, 99_999, 10) == [("bob", 6000)]


def test_a_stored_dm_goes_to_the_mailbox_and_both_histories(talk):
    """post_direct_message with history: the mailbox row (removed once delivered) and
    the two copies, which stay."""
    commit(talk, storage.post_direct_message, "carol", "alice", "stored", 7000, None, None,
           msgid(6), True)
    assert storage.count_stored_messages(talk, "carol") == 1
    page = storage.stored_messages_page(talk, "carol", 0, 10)
    commit(talk, storage.delete_stored_messages, [row.id for row in page])
    assert storage.count_stored_messages(talk, "carol") == 0
    for owner, peer in (("alice", "carol"), ("carol", "alice")):
        rows = storage.direct_history_window(talk, owner, peer, None, None, 10, True)
        assert [(r.text, r.msgid) for r in rows] == [("stored", msgid(6))]
    commit(talk, storage.post_direct_message, "bob", "carol", "no history", 8000, None, None,
           msgid(7))
    assert storage.direct_history_window(talk, "carol", "bob", None, None, 10, True) == []


def test_a_stored_dm_keeps_its_kind(talk):
    """A notice kept in the mailbox comes out of it as a notice (and is one in both
    histories); a message stored without a kind is said."""
    commit(talk, storage.post_direct_message, "carol", "alice", "heads up", 7000, None, None,
           msgid(8), True, "notice")
    commit(talk, storage.store_direct_message, "carol", "bob", "plain", 7100)
    page = storage.stored_messages_page(talk, "carol", 0, 10)
    assert [(row.sender, row.text, row.kind) for row in page] == [
        ("alice", "heads up", "notice"), ("bob", "plain", "say"),
    ]
    rows = storage.direct_history_window(talk, "carol", "alice", None, None, 10, True)
    assert [(r.text, r.kind) for r in rows] == [("heads up", "notice")]


def test_retention_erasure_and_deletion(talk):
    """Purged by age like room history; an erased sender's copies go from the other side;
    a deleted account's own copies go with it."""
    assert commit(talk, storage.purge_direct_history, 2500, 100) == 4  # m0, m1 twice
    assert texts(storage.direct_history_window(talk, "bob", "alice", None, None, 9, True)) == [
        "m2", "m3", "m4", "m5"
    ]
    first, last = storage.message_id_range(talk)
    assert commit(talk, storage.delete_user, "alice", 0)
    assert commit(talk, storage.erase_messages_from, "alice", first, last) == 2  # m2, m4 (bob's)
    assert texts(storage.direct_history_window(talk, "bob", "alice", None, None, 9, True)) == [
        "m3", "m5"
    ]
    count = talk.execute("SELECT count(*) FROM direct_history").fetchone()[0]
    assert count == 2  # alice's own copies went with her account
