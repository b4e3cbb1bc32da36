"""Long replies the core hands a door as page sources, read as the client reads.

``Mailbox`` is a user's stored direct messages, deleted only once a page was
handed over whole; ``RoomHistory`` a room's last messages in sequence order;
``DirectHistory`` the last messages of a conversation between two users.
"""

from twisted.internet import defer
from twisted.logger import Logger

from chatd.core.bulk import PAGE_LINES, Page, PageSource
from chatd.core.events import (
    DirectHistoryLine,
    StoredMessage,
    history_line,
)
from chatd.core.names import fold
from chatd.core.rooms import Room
from chatd.storage import rows, transactions
from chatd.storage.sqlite.database import Database

log = Logger()


class Mailbox(PageSource):
    """The direct messages stored for a user, read a page at a time.

    A page is deleted from the store once it was handed over; a page that
    was not (the connection went) stays for the next login. ``on_settled``
    is called once no page is in flight any more and no more will be read.
    """

    def __init__(self, database: Database, user_key: str) -> None:
        self._database = database
        self._user_key = user_key
        self._after_id = 0
        self._first = True
        self._in_flight = 0
        self._ended = False
        self._settled = False
        self.on_settled = None

    def next_page(self) -> defer.Deferred:
        # The first read goes through the writer's queue, behind any message
        # to this user still being committed when the session began.
        run = self._database.write if self._first else self._database.read
        self._first = False
        reading = run(transactions.stored_messages_page, self._user_key, self._after_id, PAGE_LINES)
        return reading.addCallback(self._page)

    def _page(self, rows: list[rows.StoredRow]) -> Page | None:
        if not rows:
            self._ended = True
            self._check_settled()
            return None
        self._after_id = rows[-1].id
        self._in_flight += 1
        ids = [row.id for row in rows]
        events = [
            StoredMessage(row.sent_at, row.sender, row.text, row.msgid, row.kind) for row in rows
        ]
        return Page(events, lambda handed: self._handed_over(ids, handed))

    def _handed_over(self, ids: list[int], handed: bool) -> None:
        self._in_flight -= 1
        if handed:
            deleting = self._database.write(transactions.delete_stored_messages, ids)
            deleting.addErrback(
                lambda failure: log.failure("deleting delivered stored messages", failure)
            )
        self._check_settled()

    def abandoned(self) -> None:
        self._ended = True
        self._check_settled()

    def _check_settled(self) -> None:
        if self._ended and not self._in_flight and not self._settled:
            self._settled = True
            if self.on_settled is not None:
                self.on_settled()


class RoomHistory(PageSource):
    """A room's last ``count`` messages, read from the database a page at a time."""

    def __init__(self, database: Database, room: Room, count: int) -> None:
        self._database = database
        self._room = room
        self.room_name = room.name
        self._count = count
        self._next_seq: int | None = None
        self._last_seq = 0

    def next_page(self) -> defer.Deferred:
        if self._next_seq is None:
            reading = self._database.read(
                transactions.room_history_bounds, self._room.id, self._count
            )
            return reading.addCallback(self._bounded)
        if self._next_seq > self._last_seq:
            return defer.succeed(None)
        reading = self._database.read(
            transactions.room_messages_between,
            self._room.id,
            self._next_seq,
            self._last_seq,
            PAGE_LINES,
        )
        return reading.addCallback(self._page)

    def _bounded(self, bounds: tuple[int, int] | None) -> defer.Deferred | None:
        if bounds is None:
            return None
        self._next_seq, self._last_seq = bounds
        return self.next_page()

    def _page(self, rows: list[rows.HistoryRow]) -> Page | None:
        if not rows:
            return None
        self._next_seq = rows[-1].seq + 1
        name = self._room.name
        return Page(
            [
                history_line(name, row.sent_at, row.sender, row.text, row.kind, row.msgid, row.seq)
                for row in rows
            ]
        )


class DirectHistory(PageSource):
    """The last ``count`` messages of ``owner_key``'s conversation with ``peer``, read
    from the database a page at a time (oldest first); nothing when ``owner_key`` is
    None (a guest keeps no history)."""

    def __init__(self, database: Database, owner_key: str | None, peer: str, count: int) -> None:
        self._database = database
        self._owner_key = owner_key
        self.peer = peer
        self._peer_key = fold(peer)
        self._count = count
        self._next_id: int | None = None
        self._last_id = 0

    def next_page(self) -> defer.Deferred:
        if self._owner_key is None:
            return defer.succeed(None)
        if self._next_id is None:
            reading = self._database.read(
                transactions.direct_history_bounds, self._owner_key, self._peer_key, self._count
            )
            return reading.addCallback(self._bounded)
        if self._next_id > self._last_id:
            return defer.succeed(None)
        reading = self._database.read(
            transactions.direct_history_between,
            self._owner_key,
            self._peer_key,
            self._next_id,
            self._last_id,
            PAGE_LINES,
        )
        return reading.addCallback(self._page)

    def _bounded(self, bounds: tuple[int, int] | None) -> defer.Deferred | None:
        if bounds is None:
            return None
        self._next_id, self._last_id = bounds
        return self.next_page()

    def _page(self, found: list[rows.DirectRow]) -> Page | None:
        if not found:
            return None
        self._next_id = found[-1].id + 1
        return Page([
            DirectHistoryLine(
                self.peer, row.sent_at, row.sender, row.recipient, row.text, row.msgid, row.kind
            )
            for row in found
        ])
