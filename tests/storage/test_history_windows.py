"""Storage of room history as IRC's draft/chathistory reads it: windows, marks, targets."""

import pytest

from chatd.core.ids import format_message_id
from chatd.storage import transactions as storage
from chatd.storage.rows import HistoryMark
from chatd.storage.sqlite.schema import open_database_file, transaction


@pytest.fixture
def connection(tmp_path):
    """A migrated database file, with room #den holding m0..m9 sent at 1000, 2000, ... ms."""
    opened = open_database_file(str(tmp_path / "chatd.sqlite3"))
    with transaction(opened):
        room_id, _, _ = storage.open_room(opened, "#den", 0, 0)
        for number in range(10):
            storage.add_room_message(
                opened, room_id, "alice", f"m{number}", (number + 1) * 1000,
                msgid=format_message_id((number + 1) * 1000, 7, 0),
            )
    yield opened
    opened.close()


def den(connection) -> int:
    """The id of #den."""
    return connection.execute("SELECT id FROM rooms WHERE name_key = '#den'").fetchone()[0]


def window(connection, *arguments, **options) -> list[str]:
    """The texts ``room_history_window`` returns for #den."""
    rows = storage.room_history_window(connection, den(connection), *arguments, **options)
    return [row.text for row in rows]


def msgid(number: int) -> HistoryMark:
    """The mark of message ``m<number>`` by its id."""
    return HistoryMark(msgid=format_message_id((number + 1) * 1000, 7, 0))


def test_windows_by_id_and_by_time_exclude_their_marks(connection):
    """After and before a mark, by id or time, newest or oldest end, marks excluded."""
    assert window(connection, msgid(3), None, 3, False) == ["m4", "m5", "m6"]
    assert window(connection, HistoryMark(time=4000), None, 3, False) == ["m4", "m5", "m6"]
    assert window(connection, None, msgid(6), 2, True) == ["m4", "m5"]
    assert window(connection, msgid(0), msgid(9), 100, False) == [f"m{n}" for n in range(1, 9)]
    assert window(connection, None, None, 1, True) == ["m9"]


def test_around_takes_the_mark_and_both_sides(connection):
    """Around m7: m7 for 1; m6, m7, m8 for 3; the first after a time that has none."""
    rows = storage.room_history_around(connection, den(connection), msgid(7), 3)
    assert [row.text for row in rows] == ["m6", "m7", "m8"]
    rows = storage.room_history_around(connection, den(connection), HistoryMark(time=7500), 1)
    assert [row.text for row in rows] == ["m7"]


def test_an_id_made_at_another_time_than_sent_is_still_found(connection):
    """A message whose id's time differs from its sent_at (a clock that stepped back)."""
    odd = format_message_id(99_000, 7, 3)
    storage.add_room_message(connection, den(connection), "bob", "odd", 11_000, msgid=odd)
    storage.add_room_message(connection, den(connection), "bob", "after", 12_000)
    assert window(connection, HistoryMark(msgid=odd), None, 10, False) == ["after"]


def test_an_unknown_id_finds_nothing(connection):
    """A mark naming no message of the room finds nothing, before, after or around it."""
    for unknown in ("0000000000000000beef", "not-an-id"):
        assert window(connection, HistoryMark(msgid=unknown), None, 10, False) == []
        assert window(connection, None, HistoryMark(msgid=unknown), 10, True) == []
        mark = HistoryMark(msgid=unknown)
        assert storage.room_history_around(connection, den(connection), mark, 3) == []


def test_targets_are_rooms_by_their_last_message(connection):
    """Rooms whose last message is strictly between the times, earliest first, limited."""
    with transaction(connection):
        other, _, _ = storage.open_room(connection, "#other", 0, 0)
        storage.add_room_message(connection, other, "bob", "x", 20_000)
        empty, _, _ = storage.open_room(connection, "#empty", 0, 0)
    rooms = (den(connection), other, empty)
    assert storage.room_history_targets(connection, rooms, 0, 30_000, 10) == [
        ("#den", 10_000), ("#other", 20_000)
    ]
    assert storage.room_history_targets(connection, rooms, 0, 30_000, 1) == [("#den", 10_000)]
    assert storage.room_history_targets(connection, rooms, 10_000, 30_000, 10) == [
        ("#other", 20_000)
    ]
