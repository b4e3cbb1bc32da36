"""Retention: exactly what is past its age goes, a batch per write, on the injected clock."""

from twisted.internet import task

from chatd.ops.retention import ACCOUNT_EVENT_DAYS, DAY_MS, RetentionService
from chatd.storage import transactions
from chatd.storage.sqlite import schema
from tests.support import ChatHarness, InlineDatabase

NOW_MS = 1_764_064_800_000


def remaining(database: InlineDatabase, table: str) -> list[int]:
    """The ``sent_at`` (or ``at``) of every row left in ``table``."""
    column = "at" if table == "account_events" else "sent_at"
    rows = database.connection.execute(f"SELECT {column} FROM {table} ORDER BY id")
    return [row[0] for row in rows]


def fill(database: InlineDatabase, ages_ms: list[int]) -> None:
    """A room message, a stored message and an account event at each age before NOW_MS."""
    connection = database.connection
    with schema.transaction(connection):
        transactions.create_user(connection, "bob", "hash", 0)
        room_id, _, _ = transactions.open_room(connection, "#lobby", 0, 50)
        for age in ages_ms:
            transactions.add_room_message(connection, room_id, "alice", "hello", NOW_MS - age)
            transactions.store_direct_message(connection, "bob", "alice", "psst", NOW_MS - age)
            transactions.record_direct_message(
                connection, "alice", "bob", "psst", NOW_MS - age, "id", ("bob",)
            )
            transactions.record_account_event(connection, "carol", "ban", NOW_MS - age)


def retention(database, clock, chat=None, **settings) -> RetentionService:
    """A retention service over ``database`` with the given ages and batch size."""
    settings.setdefault("room_history_days", None)
    settings.setdefault("stored_message_days", None)
    harness_chat = chat or ChatHarness(database=database).chat
    return RetentionService(database, clock, harness_chat, harness_chat.telemetry, **settings)


def test_purges_exactly_what_is_past_its_age():
    """A row exactly as old as the limit stays; one millisecond older, it goes."""
    database = InlineDatabase()
    days = 30
    limit = days * DAY_MS
    ages = [limit + DAY_MS, limit + 1, limit, limit - 1, 0]
    fill(database, ages)
    clock = task.Clock()
    clock.advance(NOW_MS / 1000)
    retention(database, clock, room_history_days=days, stored_message_days=days).purge()
    kept = [NOW_MS - limit, NOW_MS - limit + 1, NOW_MS]
    assert remaining(database, "room_messages") == kept
    assert remaining(database, "stored_messages") == kept
    assert remaining(database, "direct_history") == kept
    # Account events always go after ACCOUNT_EVENT_DAYS: all but the newest are older.
    assert remaining(database, "account_events") == [NOW_MS]


def test_each_table_has_its_own_age_and_off_keeps_everything():
    """Room history kept forever while stored messages expire after 2 days, and the reverse."""
    for history_days, stored_days in ((None, 2), (2, None)):
        database = InlineDatabase()
        fill(database, [3 * DAY_MS, DAY_MS])
        clock = task.Clock()
        clock.advance(NOW_MS / 1000)
        retention(
            database, clock, room_history_days=history_days, stored_message_days=stored_days
        ).purge()
        expect_all, expect_recent = [NOW_MS - 3 * DAY_MS, NOW_MS - DAY_MS], [NOW_MS - DAY_MS]
        assert remaining(database, "room_messages") == (
            expect_all if history_days is None else expect_recent
        )
        # The history of direct messages goes with room history's age.
        assert remaining(database, "direct_history") == (
            expect_all if history_days is None else expect_recent
        )
        assert remaining(database, "stored_messages") == (
            expect_all if stored_days is None else expect_recent
        )


def test_deletes_in_small_batches_each_its_own_write():
    """Ten old rows, batches of three: four writes for the table, none of them big."""
    database = InlineDatabase()
    fill(database, [5 * DAY_MS] * 10 + [0])
    clock = task.Clock()
    clock.advance(NOW_MS / 1000)
    service = retention(database, clock, room_history_days=1, batch=3)
    writes_before = database.writes
    service.purge()
    # room_messages and direct_history: 3 + 3 + 3 + 1 each; account_events (older than
    # 7 days: none here): 1.
    assert database.writes - writes_before == 9
    assert remaining(database, "room_messages") == [NOW_MS]
    assert remaining(database, "direct_history") == [NOW_MS]


def test_runs_in_the_background_on_the_clock():
    """Started, it purges at once and again every interval as rows come of age."""
    database = InlineDatabase()
    fill(database, [0])
    clock = task.Clock()
    clock.advance(NOW_MS / 1000)
    service = retention(database, clock, stored_message_days=1, interval=600)
    service.startService()
    assert remaining(database, "stored_messages") == [NOW_MS]
    clock.advance(DAY_MS / 1000 - 600)
    assert remaining(database, "stored_messages") == [NOW_MS]
    clock.advance(600)
    assert remaining(database, "stored_messages") == [NOW_MS]  # exactly a day old: kept
    clock.advance(600)
    assert remaining(database, "stored_messages") == []
    metrics = service._telemetry.metrics
    assert metrics.value("chatd_retention_purged_rows_total", table="stored_messages") == 1
    service.stopService()
    assert not clock.getDelayedCalls()


def test_purged_history_is_not_replayed_from_memory(harness):
    """A room with members keeps recent lines in memory: retention drops them there too."""
    alice = harness.logged_in("alice")
    alice.send("old news")
    harness.clock.advance(2 * DAY_MS / 1000)
    alice.send("fresh news")
    retention(harness.database, harness.clock, chat=harness.chat, room_history_days=1).purge()
    bob = harness.client()
    history = [line for line in bob.login("bob") if line.startswith("HISTORY")]
    assert len(history) == 1 and history[0].endswith(" alice fresh news")
    assert alice.lines() == ["JOIN #lobby bob"]
    assert alice.send("/history #lobby")[:-1] == history


def test_account_events_older_than_their_age_go_and_the_server_still_sees_new_ones(harness):
    """Dropping old account events does not hide a new ban from the running server."""
    database = harness.database
    with schema.transaction(database.connection):
        transactions.record_account_event(database.connection, "older", "ban", 0)
        transactions.record_account_event(database.connection, "old", "ban", 0)
    harness.chat.startService()
    alice = harness.logged_in("alice")
    harness.clock.advance(ACCOUNT_EVENT_DAYS * DAY_MS / 1000 + 1)
    retention(database, harness.clock, chat=harness.chat).purge()
    # The newest event (alice's create, at the harness's start) is kept however old:
    # its id keeps the next one's id above it.
    assert remaining(database, "account_events") == [1_764_064_800_000]
    with schema.transaction(database.connection):
        transactions.set_banned(database.connection, "alice", True, harness.chat.now())
    harness.clock.advance(1)
    assert alice.lines()[-1] == "BYE banned"
    harness.chat.stopService()
