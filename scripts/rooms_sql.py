"""Time the room transactions of chatd.storage on a populated database file.

5,000 accounts all in #lobby, 200 rooms of 100 members each, 50 messages per
room: how long a first login's ``arrive`` takes (loading its rooms, or with
them loaded already), a join of a loaded room, ``/rooms`` and ``/whois``.
Run: ``python scripts/rooms_sql.py`` (about a minute to build the database).
"""

import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from chatd.storage import transactions
from chatd.storage.sqlite import schema

USERS, ROOMS, MESSAGES = 5000, 200, 50


def build(connection) -> None:
    """Accounts, memberships and messages, in one transaction."""
    with schema.transaction(connection):
        for user in range(USERS):
            transactions.create_user(connection, f"u{user}", "hash", 0)
            transactions.arrive(connection, f"u{user}", 0)
        for room in range(ROOMS):
            for user in range(0, USERS, USERS // 100):
                transactions.join_room(connection, f"#r{room}", f"u{(user + room) % USERS}", 1)
            room_id = transactions.load_room(connection, f"#r{room}", 1, 0).id
            for number in range(MESSAGES):
                transactions.add_room_message(connection, room_id, "u1", f"m{number}", 2)


def timed(connection, label: str, body, count: int = 200) -> None:
    """Run ``body(i)`` ``count`` times, each in a transaction; print the mean."""
    start = time.perf_counter()
    for index in range(count):
        with schema.transaction(connection):
            body(index)
    print(f"{label}: {(time.perf_counter() - start) / count * 1e3:.3f} ms")


def main() -> None:
    """Build the database in a temporary directory and time each transaction."""
    path = os.path.join(tempfile.mkdtemp(), "rooms.sqlite3")
    connection = schema.open_database_file(path)
    build(connection)
    loaded = frozenset(f"#r{room}" for room in range(ROOMS)) | {"#lobby"}
    timed(connection, "arrive, rooms not loaded",
          lambda i: transactions.arrive(connection, f"u{i * 25 % USERS}", 3))
    timed(connection, "arrive, rooms loaded",
          lambda i: transactions.arrive(connection, f"u{i * 25 % USERS}", 3, loaded))
    timed(connection, "enter_room, room loaded",
          lambda i: transactions.enter_room(connection, "#lobby", f"u{i}", 3, None))
    timed(connection, "visible_rooms (/rooms)",
          lambda i: transactions.visible_rooms(connection, "u1"), 50)
    timed(connection, "whois", lambda i: transactions.whois(connection, f"u{i}", "u1"))


if __name__ == "__main__":
    main()
