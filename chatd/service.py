"""The chat service: users, rooms, sessions and the routing between them.

It knows nothing of sockets or of the wire format's parsing. Each logged-in
connection is a ``Session`` (the avatar twisted.cred hands out) bound to a
mind, an ``IChatClient`` the connection implements; the service reaches
sessions only through ``deliver`` and ``disconnect``. A ``User`` is an
account that has at least one session; rooms count users, not sessions, as
members, so a user with three sessions is one member whose three sessions
all see the room's traffic.

Room messages are committed to the database before anyone sees them: what
a member was shown is always in the room's history, and the ``OK`` that
follows it is only sent for a message that survives a crash.
"""

from collections import deque
from collections.abc import Iterable

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import Attribute, Interface, implementer

from chatd import storage
from chatd.bulk import PAGE_LINES, EventPages, Page, PageSource
from chatd.errors import ChatError
from chatd.events import (
    DirectMessage,
    Event,
    HistoryLine,
    Joined,
    Members,
    Parted,
    RoomMessage,
    RoomMessages,
    RoomSummary,
    StoredMessage,
)
from chatd.names import LOBBY, fold, require_room_name, require_user_name
from chatd.telemetry import Telemetry

HISTORY_ON_JOIN = 50
HISTORY_MAX = 500
# Direct messages kept for one offline user (CHATD_MAILBOX_LIMIT's default).
MAILBOX_LIMIT = 1000

log = Logger()


class IChatClient(Interface):
    """The mind: how the service reaches one connected, logged-in client."""

    def deliver(event: Event) -> None:
        """Send ``event`` to the client (its ``wire`` bytes, or a rendering)."""

    def deliver_bulk(source) -> defer.Deferred:
        """Send the pages of a ``chatd.bulk.PageSource`` as the client reads them.

        Lines delivered later come after them. Fires once every page was
        written (or the connection went).
        """

    def disconnect(reason: str) -> None:
        """Say ``BYE reason`` and close the connection."""

    connected = Attribute("False once the connection is gone and nothing can reach it.")


class IChatSession(Interface):
    """The avatar: what one logged-in connection can do."""

    name = Attribute("The user's display name.")

    def say(text: str, room_name: str | None = None) -> defer.Deferred:
        """Post to the named or current room; fire with the room's name."""

    def join(room_name: str) -> defer.Deferred:
        """Join a room (creating it) and make it current; fire with its name."""

    def part(room_name: str | None = None) -> str:
        """Leave the named or current room; return its name."""

    def message(recipient: str, text: str) -> defer.Deferred:
        """Send a direct message; fire with ``(recipient, 'delivered' or 'stored')``."""

    def who(room_name: str | None = None) -> str:
        """Deliver the members of the named or current room; return its name."""

    def rooms() -> None:
        """Deliver one summary per room that has members."""

    def history(room_name: str, count: int) -> defer.Deferred:
        """Deliver a room's last ``count`` messages; fire with the room's name."""

    def logout() -> None:
        """End this session; the user leaves every room when it was the last."""


class Room:
    """A room with at least one member (or about to get one).

    Committed messages wait in the room until the service flushes it at the
    end of the reactor turn, then reach every session as one write; any
    other event or change of membership flushes them first, so each member
    sees the room's lines in order and exactly the ones sent while a member.
    """

    def __init__(self, room_id: int, name: str, recent: Iterable[HistoryLine]) -> None:
        self.id = room_id
        self.name = name
        self.key = fold(name)
        self.members: dict[str, User] = {}
        self.recent: deque[HistoryLine] = deque(recent, maxlen=HISTORY_ON_JOIN)
        self._unsent: list[RoomMessage] = []

    def add(self, user: "User") -> None:
        """Make ``user`` a member, after delivering what was said before."""
        self.flush()
        self.members[user.key] = user
        user.rooms[self.key] = self

    def remove(self, user: "User") -> None:
        """Stop ``user`` being a member, after delivering what was said before."""
        self.flush()
        del self.members[user.key]
        del user.rooms[self.key]

    def broadcast(self, event: Event) -> None:
        """Deliver ``event`` to every session of every member, after what waits."""
        self.flush()
        self._deliver(event)

    def queue(self, message: RoomMessage) -> None:
        """Keep a committed message for the next flush, and in the recent history."""
        self._unsent.append(message)
        self.recent.append(message.as_history())

    def flush(self) -> None:
        """Deliver the queued messages: one event, so one write, per session."""
        if self._unsent:
            messages, self._unsent = self._unsent, []
            self._deliver(messages[0] if len(messages) == 1 else RoomMessages(tuple(messages)))

    def _deliver(self, event: Event) -> None:
        for user in self.members.values():
            for session in user.sessions:
                session.deliver(event)

    def member_names(self) -> tuple[str, ...]:
        """Members' display names, sorted case-insensitively."""
        return tuple(sorted((user.name for user in self.members.values()), key=str.lower))


class User:
    """An account with at least one session: Ergo's client, Twisted's avatar owner."""

    # Thousands of sessions: no per-instance __dict__.
    __slots__ = ("arriving", "key", "mailbox", "name", "rooms", "sessions")

    def __init__(self, name: str) -> None:
        self.name = name
        self.key = fold(name)
        self.sessions: list[Session] = []
        # Ordered by when the user joined: the last is the most recent.
        self.rooms: dict[str, Room] = {}
        # While the first session is still joining #lobby: the further
        # sessions' wake-ups, fired once that join has finished either way.
        self.arriving: list[defer.Deferred] | None = None
        # The stored messages on their way to one of the sessions, if any:
        # one session at a time takes them, so none is shown twice.
        self.mailbox: Mailbox | None = None

    def deliver(self, event: Event) -> None:
        """Deliver ``event`` to every session of this user."""
        for session in self.sessions:
            session.deliver(event)

    def latest_room(self) -> "Room | None":
        """The room this user joined most recently, if any."""
        return next(reversed(self.rooms.values()), None)


@implementer(IChatSession)
class Session:
    """One login of a user, bound to the connection's mind.

    The current room belongs to the session; membership belongs to the user.
    """

    # Thousands of sessions: no per-instance __dict__.
    __slots__ = ("_service", "active", "current", "dropping", "mind", "user")

    def __init__(self, service: "ChatService", user: User, mind: IChatClient) -> None:
        self._service = service
        self.user = user
        self.mind = mind
        self.current: Room | None = None
        self.active = True
        self.dropping = False

    @property
    def name(self) -> str:
        return self.user.name

    def deliver(self, event: Event) -> None:
        """Hand ``event`` to the mind; a mind that fails is dropped, nobody else notices."""
        try:
            self.mind.deliver(event)
        except Exception:
            self._service.drop(self, Failure())

    def _room(self, room_name: str | None) -> Room:
        """The named room, which the user must be in, or the current room."""
        if room_name is None:
            if self.current is None:
                raise ChatError("not-in-room", "join a room first: /join #room")
            return self.current
        require_room_name(room_name)
        room = self.user.rooms.get(fold(room_name))
        if room is None:
            raise ChatError("not-in-room", f"you are not in {room_name}")
        return room

    def say(self, text: str, room_name: str | None = None) -> defer.Deferred:
        return self._service.post(self.user, self._room(room_name), text)

    def join(self, room_name: str) -> defer.Deferred:
        require_room_name(room_name)
        room = self.user.rooms.get(fold(room_name))
        if room is not None:
            self.current = room
            return defer.succeed(room.name)
        return self._service.join(self, room_name)

    def part(self, room_name: str | None = None) -> str:
        room = self._room(room_name)
        self._service.part(self.user, room)
        return room.name

    def message(self, recipient: str, text: str) -> defer.Deferred:
        require_user_name(recipient)
        return self._service.direct_message(self.user, fold(recipient), text)

    def who(self, room_name: str | None = None) -> str:
        if room_name is None:
            room = self._room(None)
        else:
            require_room_name(room_name)
            room = self._service.rooms.get(fold(room_name))
            if room is None or not room.members:
                raise ChatError("no-such-room", f"nobody is in {room_name}")
        self.mind.deliver(Members(room.name, room.member_names()))
        return room.name

    def rooms(self) -> None:
        for room in self._service.active_rooms():
            self.mind.deliver(RoomSummary(room.name, len(room.members)))

    def history(self, room_name: str, count: int) -> defer.Deferred:
        room = self._room(room_name)
        pages = RoomHistory(self._service.database, room, min(count, HISTORY_MAX))
        # Answered once the last line is written: a client that does not read
        # holds one page in memory, and its next line waits unread.
        return self.mind.deliver_bulk(pages).addCallback(lambda _: room.name)

    def logout(self) -> None:
        if self.active:
            self.active = False
            self._service.end_session(self)


class ChatService(Service):
    """Rooms, online users and the routing of everything said between them."""

    name = "chat"

    def __init__(
        self,
        database: storage.Database,
        clock,
        account_poll_seconds: float = 1.0,
        telemetry: Telemetry | None = None,
        mailbox_limit: int = MAILBOX_LIMIT,
    ):
        self.database = database
        self.mailbox_limit = mailbox_limit
        self._clock = clock
        self.telemetry = telemetry or Telemetry()
        self.users: dict[str, User] = {}
        self.rooms: dict[str, Room] = {}
        self._opening: dict[str, defer.Deferred] = {}
        # Posts committed this reactor turn, and the call that will flush them.
        self._unflushed: list[tuple[Room, defer.Deferred]] = []
        self._flushing = None
        self._account_poll = LoopingCall(self._poll_account_events)
        self._account_poll.clock = clock
        self._account_poll_seconds = account_poll_seconds
        self._last_account_event = 0

    def now(self) -> int:
        """The time now, in Unix milliseconds."""
        return int(self._clock.seconds() * 1000)

    # --- lifecycle -------------------------------------------------------

    def startService(self) -> defer.Deferred:
        """Start watching for bans and deletions made by the admin command line."""
        super().startService()
        reading = self.database.read(storage.last_account_event_id)

        def start_polling(last_id: int) -> None:
            self._last_account_event = last_id
            self._account_poll.start(self._account_poll_seconds, now=False)

        return reading.addCallback(start_polling)

    def stopService(self) -> None:
        """Stop watching the account table."""
        super().stopService()
        if self._account_poll.running:
            self._account_poll.stop()

    def _poll_account_events(self) -> defer.Deferred:
        reading = self.database.read(storage.account_events_since, self._last_account_event)
        reading.addCallback(self._apply_account_events)
        reading.addErrback(lambda failure: log.failure("reading account events", failure))
        return reading

    def _apply_account_events(self, events: list[storage.AccountEvent]) -> None:
        reasons = {"ban": "banned", "kick": "kicked", "delete": "account-deleted"}
        for event in events:
            self._last_account_event = event.id
            if event.action == "erase":
                self._forget_history_of(event.name_key)
            user = self.users.get(event.name_key)
            if user is not None and event.action in reasons:
                self.telemetry.kicked(user.name, reasons[event.action], len(user.sessions))
                for session in list(user.sessions):
                    session.mind.disconnect(reasons[event.action])

    # --- sessions --------------------------------------------------------

    def start_session(self, name: str, mind: IChatClient) -> defer.Deferred:
        """Log ``name`` in through ``mind``; fire with the new ``Session``.

        The first session of a user joins #lobby; a further one is shown the
        rooms the user is in, once the first has finished arriving if it is
        still opening #lobby. Either way the session then gets the direct
        messages stored for the user while they had no session.
        """
        user = self.users.get(fold(name))
        first = user is None
        if first:
            user = self.users[fold(name)] = User(name)
        session = Session(self, user, mind)
        if first:
            user.arriving = []
            user.sessions.append(session)
            ready = self.join(session, LOBBY)
            ready.addBoth(self._arrived, user)
        elif user.arriving is not None:
            # In user.sessions at once: the user stays online (and joins
            # #lobby) even if the first session goes before #lobby is open.
            user.sessions.append(session)
            ready = defer.Deferred()
            user.arriving.append(ready)
            ready.addCallback(lambda _: self._show_rooms(session))
        else:
            # Shown before it is a session of the user: a message flushed
            # meanwhile must not reach it as MSG on top of its HISTORY.
            # (HISTORY is paced by the reader, but it keeps its place in the
            # session's output: what comes later waits behind it.)
            self._show_rooms(session)
            user.sessions.append(session)
            ready = defer.succeed(None)
        ready.addCallback(lambda _: self._deliver_stored(session))

        def failed(failure):
            session.logout()
            return failure

        return ready.addCallbacks(lambda _: session, failed)

    def _arrived(self, result, user: User):
        """The first session's #lobby join finished: wake the sessions that waited."""
        waiting, user.arriving = user.arriving, None
        for session_ready in waiting:
            session_ready.callback(None)
        return result

    def _show_rooms(self, session: Session) -> None:
        """Show a further session every room of its user; the latest becomes current."""
        if not session.active:
            return
        for room in session.user.rooms.values():
            self._show_room(session, room)
        session.current = session.user.latest_room()

    def end_session(self, session: Session) -> None:
        """Forget ``session``; when it was the user's last, the user leaves every room."""
        user = session.user
        user.sessions.remove(session)
        if user.sessions:
            return
        del self.users[user.key]
        for room in list(user.rooms.values()):
            self._leave(user, room)

    def _deliver_stored(self, session: Session) -> defer.Deferred | None:
        """Send the session the user's stored messages, a page at a time.

        Each page leaves the store only once it was handed over to the
        client (``chatd.bulk``); what was in flight when a connection broke
        is sent again at the next login, as the very same lines. Fires once
        the last page was written. While one session takes the mailbox,
        another that logs in gets none of it (it would show them twice).
        """
        user = session.user
        if not session.active or user.mailbox is not None:
            return None
        mailbox = user.mailbox = Mailbox(self.database, user.key)

        def settled() -> None:
            if user.mailbox is mailbox:
                user.mailbox = None

        mailbox.on_settled = settled
        return session.mind.deliver_bulk(mailbox)

    def drop(self, session: Session, failure: Failure) -> None:
        """A delivery to ``session`` raised: log it and drop that session, later.

        Later, because this runs inside a delivery to many sessions, which
        must not see memberships change under it.
        """
        if session.dropping:
            return
        session.dropping = True
        log.failure(
            "delivering to a session of {user} failed; dropping that session",
            failure,
            user=session.name,
        )
        self._clock.callLater(0, self._drop_now, session)

    def _drop_now(self, session: Session) -> None:
        try:
            session.mind.disconnect("server-error")
        except Exception:
            log.failure("disconnecting a failed session of {user}", user=session.name)
            session.logout()

    # --- rooms -----------------------------------------------------------

    def active_rooms(self) -> list[Room]:
        """Rooms with members, by name."""
        return sorted((r for r in self.rooms.values() if r.members), key=lambda r: r.key)

    def _open_room(self, name: str) -> defer.Deferred:
        """Fire with the room called ``name``, loading (or creating) it if needed.

        Loading goes through the writer queue, behind any message still being
        committed to the room, so the recent history it reads is complete.
        """
        key = fold(name)
        if key in self.rooms:
            return defer.succeed(self.rooms[key])
        waiting: defer.Deferred = defer.Deferred()
        if key in self._opening:
            self._opening[key].append(waiting)
        else:
            self._opening[key] = [waiting]
            opening = self.database.write(storage.open_room, name, self.now(), HISTORY_ON_JOIN)
            opening.addCallback(self._loaded, key)
            opening.addBoth(self._wake_openers, key)
        return waiting

    def _loaded(self, found: tuple[int, str, list[storage.HistoryRow]], key: str) -> Room:
        room_id, display_name, rows = found
        recent = (HistoryLine(display_name, r.sent_at, r.sender, r.text) for r in rows)
        room = self.rooms[key] = Room(room_id, display_name, recent)
        return room

    def _wake_openers(self, result, key: str) -> None:
        for waiting in self._opening.pop(key):
            if isinstance(result, Failure):
                waiting.errback(result)
            else:
                waiting.callback(result)

    def join(self, session: Session, name: str) -> defer.Deferred:
        """Make ``session``'s user a member of ``name``; fire with the room's name."""

        def enter(room: Room) -> str:
            user = session.user
            # Membership is the user's: it joins while any session of it is
            # left, though the one that asked may have gone meanwhile.
            shown = None
            if user.sessions and room.key not in user.rooms:
                room.add(user)
                room.broadcast(Joined(room.name, user.name))
                if session.active:
                    shown = self._show_room(session, room)
            if session.active:
                session.current = room
            self._forget_if_empty(room)
            if shown is None:
                return room.name
            # Answered once its HISTORY is written, as the client reads it.
            return shown.addCallback(lambda _: room.name)

        return self._open_room(name).addCallback(enter)

    def _show_room(self, session: Session, room: Room) -> defer.Deferred:
        """Send ``WHO`` and the recent history; fire once the history is written."""
        # Committed messages are in room.recent before they are flushed: send
        # them now, or the session would get them as HISTORY and then as MSG.
        room.flush()
        session.deliver(Members(room.name, room.member_names()))
        # A snapshot: what the room says from now on comes after it, as MSG.
        return session.mind.deliver_bulk(EventPages(tuple(room.recent)))

    def part(self, user: User, room: Room) -> None:
        """``user`` leaves ``room``; sessions that had it current move to their latest."""
        room.broadcast(Parted(room.name, user.name))
        self._leave(user, room, announce=False)
        for session in user.sessions:
            if session.current is room:
                session.current = user.latest_room()

    def _leave(self, user: User, room: Room, announce: bool = True) -> None:
        room.remove(user)
        if announce:
            room.broadcast(Parted(room.name, user.name))
        self._forget_if_empty(room)

    def forget_history_before(self, before: int) -> None:
        """Drop recent messages older than ``before`` (ms) from loaded rooms: retention."""
        for room in self.rooms.values():
            while room.recent and room.recent[0].timestamp < before:
                room.recent.popleft()

    def _forget_history_of(self, name_key: str) -> None:
        """Drop what ``name_key`` said from loaded rooms: the account was erased."""
        for room in self.rooms.values():
            kept = [line for line in room.recent if fold(line.sender) != name_key]
            if len(kept) != len(room.recent):
                room.recent = deque(kept, maxlen=HISTORY_ON_JOIN)

    def _forget_if_empty(self, room: Room) -> None:
        if not room.members and self.rooms.get(room.key) is room:
            del self.rooms[room.key]

    # --- messages --------------------------------------------------------

    def post(self, user: User, room: Room, text: str) -> defer.Deferred:
        """Commit a room message, then show it to every member; fire with the room's name.

        Messages committed in one reactor turn go out together at its end
        (``flush``), each session getting them in one write; the Deferred
        fires after that, so the sender sees its message before the ``OK``.
        """
        now = self.now()
        committing = self.database.write(storage.add_room_message, room.id, user.name, text, now)

        def queue(_message_id: int) -> defer.Deferred:
            self.telemetry.room_message(room.name, user.name, text)
            room.queue(RoomMessage(room.name, user.name, text, now))
            shown: defer.Deferred = defer.Deferred()
            self._unflushed.append((room, shown))
            if self._flushing is None:
                self._flushing = self._clock.callLater(0, self.flush)
            return shown

        return committing.addCallback(queue)

    def flush(self) -> None:
        """Deliver every queued room message, then fire the posts that queued them.

        Every post is answered, whatever a delivery does: sessions isolate
        their minds' failures, and anything else is logged here.
        """
        self._flushing = None
        posted, self._unflushed = self._unflushed, []
        for room, _shown in posted:
            try:
                room.flush()
            except Exception:
                log.failure("flushing {room}", room=room.name)
        for room, shown in posted:
            shown.callback(room.name)

    def direct_message(self, sender: User, recipient_key: str, text: str) -> defer.Deferred:
        """Deliver a direct message, or store it for an offline recipient.

        Fires with ``(recipient display name, 'delivered' | 'stored')``; a
        stored message is committed before the sender is told so.
        """
        recipient = self.users.get(recipient_key)
        if recipient is not None:
            message = DirectMessage(sender.name, recipient.name, text)
            recipient.deliver(message)
            if recipient is not sender:
                sender.deliver(message)
            self.telemetry.direct_message(sender.name, recipient.name, text, stored=False)
            return defer.succeed((recipient.name, "delivered"))
        storing = self.database.write(
            storage.store_direct_message,
            recipient_key,
            sender.name,
            text,
            self.now(),
            self.mailbox_limit,
        )

        def stored(recipient_name: str) -> tuple[str, str]:
            self.telemetry.direct_message(sender.name, recipient_name, text, stored=True)
            sender.deliver(DirectMessage(sender.name, recipient_name, text))
            return (recipient_name, "stored")

        return storing.addCallback(stored)


class Mailbox(PageSource):
    """The direct messages stored for a user, read a page at a time.

    A page is deleted from the store once it was handed over; a page that
    was not (the connection went) stays for the next login. ``on_settled``
    is called once no page is in flight any more and no more will be read.
    """

    def __init__(self, database: storage.Database, user_key: str) -> None:
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
        reading = run(storage.stored_messages_page, self._user_key, self._after_id, PAGE_LINES)
        return reading.addCallback(self._page)

    def _page(self, rows: list[storage.StoredRow]) -> Page | None:
        if not rows:
            self._ended = True
            self._check_settled()
            return None
        self._after_id = rows[-1].id
        self._in_flight += 1
        ids = [row.id for row in rows]
        events = [StoredMessage(row.sent_at, row.sender, row.text) for row in rows]
        return Page(events, lambda handed: self._handed_over(ids, handed))

    def _handed_over(self, ids: list[int], handed: bool) -> None:
        self._in_flight -= 1
        if handed:
            deleting = self._database.write(storage.delete_stored_messages, ids)
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

    def __init__(self, database: storage.Database, room: Room, count: int) -> None:
        self._database = database
        self._room = room
        self._count = count
        self._next_id: int | None = None
        self._last_id = 0

    def next_page(self) -> defer.Deferred:
        if self._next_id is None:
            reading = self._database.read(storage.room_history_bounds, self._room.id, self._count)
            return reading.addCallback(self._bounded)
        if self._next_id > self._last_id:
            return defer.succeed(None)
        reading = self._database.read(
            storage.room_messages_between, self._room.id, self._next_id, self._last_id, PAGE_LINES
        )
        return reading.addCallback(self._page)

    def _bounded(self, bounds: tuple[int, int] | None) -> defer.Deferred | None:
        if bounds is None:
            return None
        self._next_id, self._last_id = bounds
        return self.next_page()

    def _page(self, rows: list[storage.HistoryRow]) -> Page | None:
        if not rows:
            return None
        self._next_id = rows[-1].id + 1
        name = self._room.name
        return Page([HistoryLine(name, row.sent_at, row.sender, row.text) for row in rows])
