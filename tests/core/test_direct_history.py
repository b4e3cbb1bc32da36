"""The core's direct messages with a history: kept before they are shown, the mailbox
as before, and a live DM still delivered when the database cannot keep it."""

from chatd.core.errors import ChatError
from chatd.core.events import DirectHistoryLine, DirectMessage, StoredMessage
from chatd.storage import transactions
from tests.support import ChatHarness, RecordingClient, SlowDatabase


def start(harness: ChatHarness, name: str):
    """Register ``name`` if needed and start a session with a recording mind."""
    harness.accounts.register(name, "password1").addErrback(lambda failure: None)
    mind = RecordingClient()
    sessions = []
    harness.chat.start_session(name, mind).addCallback(sessions.append)
    return sessions[0], mind


def history_rows(harness, owner, peer):
    rows = transactions.direct_history_window(
        harness.database.connection, owner, peer, None, None, 100, True
    )
    return [(row.sender, row.recipient, row.text) for row in rows]


def dms(mind):
    return [e for e in mind.events if isinstance(e, DirectMessage)]


def test_a_live_dm_is_shown_once_kept_in_both_histories():
    """Nothing is shown while the history write is in flight; once committed, both
    users' sessions get it and both conversations hold it."""
    database = SlowDatabase()
    harness = ChatHarness(database=database)
    alice, alice_mind = start(harness, "alice")
    _bob, bob_mind = start(harness, "bob")
    database.holding = True
    answers = []
    alice.message("bob", "hello").addCallback(answers.append)
    assert dms(bob_mind) == [] and dms(alice_mind) == [] and answers == []
    assert history_rows(harness, "bob", "alice") == []
    database.flush()
    assert [e.text for e in dms(bob_mind)] == ["hello"] == [e.text for e in dms(alice_mind)]
    assert answers == [("bob", "delivered")]
    assert history_rows(harness, "alice", "bob") == [("alice", "bob", "hello")]
    assert history_rows(harness, "bob", "alice") == [("alice", "bob", "hello")]


def test_a_live_dm_without_a_database_is_still_delivered():
    """The database cannot store (unavailable): the DM reaches bob as it always did; only
    its history is missing. Any other refusal (forbidden) still stands."""
    harness = ChatHarness()
    alice, _ = start(harness, "alice")
    _bob, bob_mind = start(harness, "bob")
    harness.database.fail_writes = ChatError("unavailable", "cannot store")
    answers = []
    alice.message("bob", "through anyway").addCallback(answers.append)
    assert [e.text for e in dms(bob_mind)] == ["through anyway"]
    assert answers == [("bob", "delivered")]
    harness.database.fail_writes = ChatError("forbidden", "no")
    failures = []
    alice.message("bob", "not this one").addErrback(failures.append)
    assert [f.value.code for f in failures] == ["forbidden"]
    assert [e.text for e in dms(bob_mind)] == ["through anyway"]


def test_a_recipient_who_leaves_during_the_write_gets_it_from_the_mailbox():
    """bob logs out while the DM's history is committed: it waits in his mailbox (kept in
    the history once), and comes at his next login as a stored message."""
    database = SlowDatabase()
    harness = ChatHarness(database=database)
    alice, _ = start(harness, "alice")
    bob, bob_mind = start(harness, "bob")
    database.holding = True
    answers = []
    alice.message("bob", "catch you later").addCallback(answers.append)
    bob.logout()
    database.flush()
    database.flush()
    assert answers == [("bob", "stored")]
    assert dms(bob_mind) == []
    database.holding = False
    _again, again_mind = start(harness, "bob")
    stored = [e.text for e in again_mind.events if isinstance(e, StoredMessage)]
    assert stored == ["catch you later"]
    assert history_rows(harness, "bob", "alice") == [("alice", "bob", "catch you later")]


def test_the_line_doors_history_of_a_user_pages_the_conversation():
    """``direct_history``: the last n of the conversation, oldest first, both ways."""
    harness = ChatHarness()
    alice, _ = start(harness, "alice")
    bob, _ = start(harness, "bob")
    for number in range(5):
        (alice if number % 2 == 0 else bob).message(
            "bob" if number % 2 == 0 else "alice", f"m{number}"
        )
    pages = []
    source = alice.direct_history("bob", 3)

    def read(page):
        if page is not None:
            pages.extend(page.events)
            return source.next_page().addCallback(read)
        return None

    source.next_page().addCallback(read)
    assert [(e.sender, e.text) for e in pages] == [("alice", "m2"), ("bob", "m3"), ("alice", "m4")]
    assert all(isinstance(e, DirectHistoryLine) and e.peer == "bob" for e in pages)

