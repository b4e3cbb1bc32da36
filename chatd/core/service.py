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
from zope.interface import implementer

from chatd.core.bulk import PAGE_LINES, EventPages, Page, PageSource
from chatd.core.errors import ChatError
from chatd.core.events import (
    Away,
    DirectMessage,
    Event,
    HistoryLine,
    Invited,
    Joined,
    Kicked,
    Members,
    Operators,
    Parted,
    RoomMessage,
    RoomMessages,
    RoomSummary,
    Roster,
    StoredMessage,
    Topic,
    WhoisInfo,
    history_line,
)
from chatd.core.ids import MessageIds
from chatd.core.interfaces import DisconnectReason, IChatClient, IChatSession
from chatd.core.names import fold, require_room_name, require_user_name
from chatd.ops.telemetry import Telemetry
from chatd.storage import rows, transactions
from chatd.storage.sqlite.database import Database

HISTORY_ON_JOIN = 50
HISTORY_MAX = 500
# Direct messages kept for one offline user (CHATD_MAILBOX_LIMIT's default).
MAILBOX_LIMIT = 1000

log = Logger()


class Room:
    """A room with at least one member (or about to get one).

    Committed messages wait in the room until the service flushes it at the
    end of the reactor turn, then reach every session as one write; any
    other event or change of membership flushes them first, so each member
    sees the room's lines in order and exactly the ones sent while a member.
    """

    def __init__(
        self,
        room_id: int,
        name: str,
        recent: Iterable[HistoryLine],
        topic: str = "",
        topic_setter: str = "",
        private: bool = False,
        operators: Iterable[str] = (),
    ) -> None:
        self.id = room_id
        self.name = name
        self.key = fold(name)
        # The members online; every member, online or not, is in the database.
        self.members: dict[str, User] = {}
        self.topic = topic
        self.topic_setter = topic_setter
        # When the topic was set (ms), if this server saw it happen; 0: unknown.
        self.topic_time = 0
        self.private = private
        # Every operator, online or not: folded name -> display name.
        self.operators: dict[str, str] = {}
        self.set_operators(operators)
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
        """Online members' display names, sorted case-insensitively."""
        return tuple(sorted((user.name for user in self.members.values()), key=str.lower))

    def set_operators(self, names: Iterable[str]) -> None:
        """Replace the operators by ``names`` (display names)."""
        self.operators = {fold(name): name for name in names}

    def operator_names(self) -> tuple[str, ...]:
        """Operators' display names, sorted case-insensitively."""
        return tuple(sorted(self.operators.values(), key=str.lower))

    def extra_lines(self) -> list[Event]:
        """What a joining session gets after ``WHO``: the topic and the operators, if any."""
        lines: list[Event] = []
        if self.topic:
            lines.append(Topic(self.name, self.topic_setter, self.topic))
        if self.operators:
            lines.append(Operators(self.name, self.operator_names()))
        return lines


class User:
    """An account with at least one session: Ergo's client, Twisted's avatar owner."""

    # Thousands of sessions: no per-instance __dict__.
    __slots__ = (
        "account_id", "arriving", "away", "key", "mailbox", "name", "rooms", "sessions"
    )

    def __init__(self, name: str, account_id: tuple[int, int] | None = None) -> None:
        self.name = name
        # The identity (users.id, incarnation) of the account the sessions
        # logged into (None: not known,
        # for sessions started without a checked login, as in tests).
        self.account_id = account_id
        self.key = fold(name)
        # The away text (/away), empty when not away; kept in the database too.
        self.away = ""
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
    __slots__ = (
        "_service", "active", "current", "dropping", "mind", "origin", "trusted_from", "user"
    )

    def __init__(
        self, service: "ChatService", user: User, mind: IChatClient, trusted_from: int = 0
    ) -> None:
        self._service = service
        # Opaque to doors: the events this session causes carry it, so a door
        # tells its own echo from another session of the same user.
        self.origin = service.next_origin()
        self.user = user
        self.mind = mind
        self.current: Room | None = None
        self.active = True
        self.dropping = False
        # The newest account event this session's login already took into
        # account: only later bans, kicks and password changes end it.
        self.trusted_from = trusted_from

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
        return self._service.post(self.user, self._room(room_name), text, origin=self.origin)

    def join(self, room_name: str) -> defer.Deferred:
        require_room_name(room_name)
        room = self.user.rooms.get(fold(room_name))
        if room is not None:
            self.current = room
            return defer.succeed(room.name)
        return self._service.join(self, room_name)

    def part(self, room_name: str | None = None) -> defer.Deferred:
        room = self._room(room_name)
        leaving = self._service.database.write(transactions.leave_room, room.id, self.user.key)
        leaving.addCallback(lambda _: self._service.part(self.user, room))
        return leaving.addCallback(lambda _: room.name)

    def message(self, recipient: str, text: str) -> defer.Deferred:
        require_user_name(recipient)
        sending = self._service.direct_message(self.user, fold(recipient), text, self.origin)

        def tell_away(outcome: tuple[str, str, str]) -> tuple[str, str]:
            name, delivery, away = outcome
            if away and self.active:
                self.deliver(Away(name, away))
            return name, delivery

        return sending.addCallback(tell_away)

    def who(self, room_name: str | None = None) -> Roster:
        if room_name is None:
            room = self._room(None)
        else:
            require_room_name(room_name)
            room = self._service.rooms.get(fold(room_name))
            hidden = room is not None and room.private and room.key not in self.user.rooms
            if room is None or not room.members or hidden:
                raise ChatError("no-such-room", f"nobody is in {room_name}")
        return Roster(room.name, room.member_names(), room.operator_names())

    def rooms(self) -> defer.Deferred:
        reading = self._service.database.read(transactions.visible_rooms, self.user.key)
        return reading.addCallback(
            lambda found: [RoomSummary(name, count) for name, count in found]
        )

    def act(self, text: str, room_name: str | None = None) -> defer.Deferred:
        return self._service.post(
            self.user, self._room(room_name), text, rows.ACTION, self.origin
        )

    def topic(self, room_name: str) -> Topic:
        room = self._room(room_name)
        return Topic(room.name, room.topic_setter, room.topic, room.topic_time)

    def set_topic(self, room_name: str, text: str) -> defer.Deferred:
        return self._service.set_topic(self.user, self._room(room_name), text)

    def set_operator(self, room_name: str, user_name: str, operator: bool) -> defer.Deferred:
        room = self._room(room_name)
        require_user_name(user_name)
        return self._service.set_operator(self.user, room, fold(user_name), operator)

    def kick(self, room_name: str, user_name: str, reason: str) -> defer.Deferred:
        room = self._room(room_name)
        require_user_name(user_name)
        return self._service.kick(self.user, room, fold(user_name), reason)

    def ban(self, room_name: str, user_name: str, banned: bool) -> defer.Deferred:
        room = self._room(room_name)
        require_user_name(user_name)
        return self._service.ban(self.user, room, fold(user_name), banned)

    def set_private(self, room_name: str, private: bool) -> defer.Deferred:
        return self._service.set_private(self.user, self._room(room_name), private)

    def invite(self, room_name: str, user_name: str) -> defer.Deferred:
        room = self._room(room_name)
        require_user_name(user_name)
        return self._service.invite(self.user, room, fold(user_name))

    def bans(self, room_name: str) -> defer.Deferred:
        room = self._room(room_name)
        return self._service.database.read(transactions.room_bans, room.id)

    def away(self, text: str | None) -> defer.Deferred:
        return self._service.set_away(self.user, text or "")

    def whois(self, user_name: str) -> defer.Deferred:
        require_user_name(user_name)
        return self._service.whois(self, fold(user_name))

    def history(self, room_name: str, count: int) -> "RoomHistory":
        room = self._room(room_name)
        return RoomHistory(self._service.database, room, min(count, HISTORY_MAX))

    def room_count(self) -> int:
        return len(self.user.rooms)

    def joining(self, room_name: str) -> str:
        require_room_name(room_name)
        key = fold(room_name)
        if key in self.user.rooms:
            return "member"
        return "open" if self._service.is_open(key) else "closed"

    def is_online(self, user_name: str) -> bool:
        return fold(user_name) in self._service.users

    def logout(self) -> None:
        if self.active:
            self.active = False
            self._service.end_session(self)

    def password_changed(self, event_id: int) -> None:
        self.trusted_from = max(self.trusted_from, event_id)
        self._service.end_sessions(
            self.user, DisconnectReason.PASSWORD_CHANGED, event_id, keep=self
        )


class ChatService(Service):
    """Rooms, online users and the routing of everything said between them."""

    name = "chat"

    def __init__(
        self,
        database: Database,
        clock,
        account_poll_seconds: float = 1.0,
        telemetry: Telemetry | None = None,
        mailbox_limit: int = MAILBOX_LIMIT,
    ):
        self.database = database
        self.mailbox_limit = mailbox_limit
        self._clock = clock
        self.telemetry = telemetry or Telemetry()
        # Every room message and direct message gets its id here, in the core.
        self.message_ids = MessageIds()
        self._origins = 0
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
        # Called with (user, away text) whenever a user's away text changes:
        # doors that tell others about it (IRC's away-notify) listen here.
        self.away_watchers: list = []

    def next_origin(self) -> int:
        """A new session's ``origin``: unique in this process."""
        self._origins += 1
        return self._origins

    def now(self) -> int:
        """The time now, in Unix milliseconds."""
        return int(self._clock.seconds() * 1000)

    # --- lifecycle -------------------------------------------------------

    def startService(self) -> defer.Deferred:
        """Start watching for bans and deletions made by the admin command line."""
        super().startService()
        reading = self.database.read(transactions.last_account_event_id)

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
        reading = self.database.read(transactions.account_events_since, self._last_account_event)
        reading.addCallback(self._apply_account_events)
        reading.addErrback(lambda failure: log.failure("reading account events", failure))
        return reading

    # What each account event ends sessions with; a ``create`` event means the
    # name was free, so a session still open under it is a deleted account's.
    ENDING_EVENTS = {
        "ban": DisconnectReason.BANNED,
        "kick": DisconnectReason.KICKED,
        "delete": DisconnectReason.ACCOUNT_DELETED,
        "create": DisconnectReason.ACCOUNT_DELETED,
        "passwd": DisconnectReason.PASSWORD_CHANGED,
    }

    def _apply_account_events(self, events: list[rows.AccountEvent]) -> None:
        for event in events:
            self._last_account_event = event.id
            if event.room_key is not None:
                self._apply_room_event(event)
                continue
            if event.action == "erase":
                self._forget_history_of(event.name_key)
            user = self.users.get(event.name_key)
            if user is None or event.action not in self.ENDING_EVENTS:
                continue
            if event.action == "create" and user.account_id is None:
                # Sessions not bound to an account id (started without a
                # checked login, in tests) cannot be told from the new owner's.
                continue
            self.end_sessions(user, self.ENDING_EVENTS[event.action], event.id)

    def end_sessions(
        self,
        user: User,
        reason: DisconnectReason,
        event_id: int | None = None,
        keep: Session | None = None,
    ) -> None:
        """End ``user``'s sessions that started before account event ``event_id`` (all
        if None), but ``keep``: each is told ``BYE reason`` and forgotten at once,
        so nothing meant for the account reaches it any more."""
        ending = [
            session
            for session in user.sessions
            if session is not keep and (event_id is None or session.trusted_from < event_id)
        ]
        if not ending:
            return
        self.telemetry.kicked(user.name, reason, len(ending))
        for session in ending:
            session.mind.disconnect(reason)
            session.logout()

    def account_created(self, name_key: str) -> None:
        """An account was just created under ``name_key`` on this server: a session
        still open under the name is a deleted account's, and ends now."""
        user = self.users.get(name_key)
        if user is not None:
            self.end_sessions(user, DisconnectReason.ACCOUNT_DELETED)

    def _apply_room_event(self, event: rows.AccountEvent) -> None:
        """Show live sessions a change ``chatd room ...`` made in the database.

        A room nobody online is in needs nothing: it is loaded from the
        database, change included, when someone comes back to it.
        """
        room = self.rooms.get(event.room_key)
        if room is None:
            return
        action = event.action.removeprefix("room-")
        if action == "topic":
            room.topic, room.topic_setter = event.detail, rows.ADMIN
            room.broadcast(Topic(room.name, rows.ADMIN, event.detail))
        elif action in ("op", "deop"):
            operators = dict(room.operators)
            if action == "op":
                operators[event.name_key] = event.user_name
            else:
                operators.pop(event.name_key, None)
            self._change_operators(room, operators.values())
        elif action in ("kick", "ban") and event.user_name:
            reason = "banned" if action == "ban" else event.detail
            self._remove_member(room, event.user_name, rows.ADMIN, reason)

    # --- sessions --------------------------------------------------------

    def start_session(self, name: str, mind: IChatClient) -> defer.Deferred:
        """Log ``name`` in through ``mind``; fire with the new ``Session``.

        A ``name`` from a checked login (``chatd.auth.cred.LoginIdentity``) is first
        checked again against the database: the account must still be the one
        whose password was checked (not deleted, nor deleted and registered
        again), not banned, and not kicked nor have its password changed since
        the check began; else the login fails (``bad-credentials``, ``banned``,
        ``kicked``). The session is bound to the account's identity.
        """
        account_id = getattr(name, "account_id", None)
        if account_id is None:
            return self._start_session(str(name), mind, None, 0)
        checking = self.database.read(
            transactions.account_changes_since, fold(name), name.seen_event
        )
        return checking.addCallback(self._checked_again, account_id, mind)

    def _checked_again(
        self, found, account_id: tuple[int, int], mind: IChatClient
    ) -> defer.Deferred:
        account, actions, newest = found
        if account is None or account.identity != account_id or "passwd" in actions:
            raise ChatError("bad-credentials", "unknown user or wrong password")
        if account.banned:
            raise ChatError("banned", "this account is banned")
        if "kick" in actions:
            raise ChatError(
                "kicked", "an operator ended this account's sessions while you logged in"
            )
        return self._start_session(account.name, mind, account.identity, newest)

    def _start_session(
        self, name: str, mind: IChatClient, account_id: tuple[int, int] | None, trusted_from: int
    ) -> defer.Deferred:
        """Start the session of a login checked (again) just now.

        The first session of a user joins #lobby; a further one is shown the
        rooms the user is in, once the first has entered its rooms if it is
        still arriving (not waiting for the first to read its history). Either
        way the session then gets the direct messages stored for the user
        while they had no session.
        """
        user = self.users.get(fold(name))
        stale = user is not None and None not in (user.account_id, account_id)
        if stale and user.account_id != account_id:
            # A deleted account's sessions, not yet ended: they end now.
            self.end_sessions(user, DisconnectReason.ACCOUNT_DELETED)
            user = self.users.get(fold(name))
        first = user is None
        if first:
            user = self.users[fold(name)] = User(name, account_id)
        session = Session(self, user, mind, trusted_from)
        if first:
            user.arriving = []
            user.sessions.append(session)
            ready = self._arrive(session)
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

    def _arrive(self, session: Session) -> defer.Deferred:
        """A user's first session: rejoin #lobby and every room of the user, in order.

        Each room gets ``JOIN`` to its members, then this session its ``WHO``,
        topic, operators and recent history; then the invitations that
        waited for the user. The rooms load at once, side by side.
        """
        user = session.user
        # Rooms loaded now need no loading in the transaction: their state here is newer.
        arriving = self.database.write(
            transactions.arrive, user.key, self.now(), frozenset(self.rooms), HISTORY_ON_JOIN
        )

        def open_rooms(arrival: rows.Arrival) -> defer.Deferred:
            user.away = arrival.away
            opening = [self._room_for(name, state) for name, state in arrival.rooms]
            gathered = defer.gatherResults(opening, consumeErrors=True)
            gathered.addErrback(lambda failure: failure.value.subFailure)
            return gathered.addCallback(enter_rooms, arrival)

        def enter_rooms(rooms: list[Room], arrival: rows.Arrival) -> defer.Deferred:
            # Each room's HISTORY keeps its place in the session's output:
            # the next room's lines, and the invitations, queue behind it.
            shown = [defer.maybeDeferred(self._enter, session, room) for room in rooms]
            if session.active:
                for room_name, by in arrival.invites:
                    session.deliver(Invited(room_name, by))
            # The user is in its rooms: the sessions that waited come in now,
            # not once this one has read its history (it may never read it).
            self._arrived(None, user)
            return defer.gatherResults(shown, consumeErrors=True)

        return arriving.addCallback(open_rooms)

    def _arrived(self, result, user: User):
        """The first session entered its rooms (or failed to): wake the sessions that waited.

        Called once the memberships are done, and again (doing nothing) once
        the first session's history was written or its arrival failed.
        """
        waiting, user.arriving = user.arriving or [], None
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
        noting = self.database.write(transactions.set_last_seen, user.key, self.now())
        noting.addErrback(lambda failure: log.failure("noting when a user left", failure))

    def _deliver_stored(self, session: Session) -> defer.Deferred | None:
        """Send the session the user's stored messages, a page at a time.

        Each page leaves the store only once it was handed over to the
        client (``chatd.core.bulk``); what was in flight when a connection broke
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
            session.mind.disconnect(DisconnectReason.SERVER_ERROR)
        except Exception:
            log.failure("disconnecting a failed session of {user}", user=session.name)
            session.logout()

    # --- rooms -----------------------------------------------------------

    def is_open(self, key: str) -> bool:
        """Whether the room of folded name ``key`` is in memory (or being loaded)."""
        return key in self.rooms or key in self._opening

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
            opening = self.database.write(transactions.load_room, name, self.now(), HISTORY_ON_JOIN)
            opening.addCallback(self._loaded, key)
            opening.addBoth(self._wake_openers, key)
        return waiting

    def _room_for(self, name: str, state: rows.RoomState | None) -> defer.Deferred:
        """Fire with the loaded room ``name``: the one in memory, or one made of
        ``state`` (loaded in the same transaction as a join), or one loaded now."""
        room = self.rooms.get(fold(name))
        if room is not None:
            return defer.succeed(room)
        if state is not None:
            return defer.succeed(self._loaded(state, fold(name)))
        return self._open_room(name)

    def _loaded(self, state: rows.RoomState, key: str) -> Room:
        """The room in memory, else a new one made of ``state``.

        What is in memory is never older than what a transaction loaded: every
        change is made in memory as its commit is reported, in commit order.
        """
        if key in self.rooms:
            return self.rooms[key]
        name = state.name
        recent = (
            history_line(name, r.sent_at, r.sender, r.text, r.kind, r.msgid, r.seq)
            for r in state.recent
        )
        room = self.rooms[key] = Room(
            state.id,
            name,
            recent,
            state.topic,
            state.topic_setter,
            state.private,
            state.operators,
        )
        return room

    def _wake_openers(self, result, key: str) -> None:
        for waiting in self._opening.pop(key):
            if isinstance(result, Failure):
                waiting.errback(result)
            else:
                waiting.callback(result)

    def join(self, session: Session, name: str) -> defer.Deferred:
        """Make ``session``'s user a member of ``name``; fire with the room's name.

        The membership is committed first (refused with ``forbidden`` for a
        ban, or a private room without an invitation); it lasts until
        ``/part``, a kick or a ban.
        """
        # Loaded in the same transaction unless the room is in memory already.
        load = None if fold(name) in self.rooms else HISTORY_ON_JOIN
        joining = self.database.write(
            transactions.enter_room, name, session.user.key, self.now(), load
        )
        joining.addCallback(lambda found: self._room_for(*found))
        return joining.addCallback(lambda room: self._enter(session, room))

    def _enter(self, session: Session, room: Room) -> defer.Deferred | str:
        """Put a member's user into a loaded room and make it the session's current room.

        Fires with the room's name (at once, or once its HISTORY is written).
        """
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

    def _show_room(self, session: Session, room: Room) -> defer.Deferred:
        """Send ``WHO`` and the recent history; fire once the history is written."""
        # Committed messages are in room.recent before they are flushed: send
        # them now, or the session would get them as HISTORY and then as MSG.
        room.flush()
        session.deliver(Members(room.name, room.member_names()))
        for line in room.extra_lines():
            session.deliver(line)
        # A snapshot: what the room says from now on comes after it, as MSG.
        return session.mind.deliver_bulk(EventPages(tuple(room.recent)))

    def part(self, user: User, room: Room) -> None:
        """``user`` leaves ``room``; sessions that had it current move to their latest."""
        if room.key not in user.rooms:
            return  # gone already: kicked, or the last session ended, meanwhile
        room.broadcast(Parted(room.name, user.name))
        self._leave(user, room, announce=False)
        for session in user.sessions:
            if session.current is room:
                session.current = user.latest_room()
        if user.key in room.operators:
            operators = dict(room.operators)
            del operators[user.key]
            self._change_operators(room, operators.values())

    # --- moderation --------------------------------------------------------

    def _require_operator(self, user: User, room: Room) -> None:
        if user.key not in room.operators:
            raise ChatError("forbidden", f"only an operator of {room.name} may do that")

    def _change_operators(self, room: Room, names: Iterable[str]) -> None:
        """Replace a room's operators, telling its members when they changed."""
        before = room.operator_names()
        room.set_operators(names)
        if room.operator_names() != before:
            room.broadcast(Operators(room.name, room.operator_names()))

    def _remove_member(self, room: Room, name: str, by: str, reason: str) -> None:
        """``name`` was kicked or banned from ``room`` (committed): ``KICK`` to all, then out."""
        room.broadcast(Kicked(room.name, name, by, reason))
        user = self.users.get(fold(name))
        if user is not None and room.key in user.rooms:
            room.remove(user)
            for session in user.sessions:
                if session.current is room:
                    session.current = user.latest_room()
        if fold(name) in room.operators:
            operators = dict(room.operators)
            del operators[fold(name)]
            self._change_operators(room, operators.values())
        self._forget_if_empty(room)

    def set_topic(self, user: User, room: Room, text: str) -> defer.Deferred:
        """Set a room's topic: an operator, or any member of a room without operators."""
        if room.operators:
            self._require_operator(user, room)
        writing = self.database.write(transactions.set_topic, room.id, text, user.name)

        def show(_) -> str:
            room.topic, room.topic_setter = text, user.name
            room.topic_time = self.now()
            room.broadcast(Topic(room.name, user.name, text))
            return room.name

        return writing.addCallback(show)

    def set_operator(
        self, user: User, room: Room, target_key: str, operator: bool
    ) -> defer.Deferred:
        """An operator makes a member an operator, or not: ``OPS`` to all members."""
        self._require_operator(user, room)
        writing = self.database.write(transactions.set_operator, room.id, target_key, operator)

        def show(outcome: tuple[str, tuple[str, ...]]) -> str:
            _name, operators = outcome
            room.set_operators(operators)
            room.broadcast(Operators(room.name, room.operator_names()))
            return room.name

        return writing.addCallback(show)

    def kick(self, user: User, room: Room, target_key: str, reason: str) -> defer.Deferred:
        """An operator removes a member: ``KICK`` to all members, the kicked included."""
        self._require_operator(user, room)
        writing = self.database.write(transactions.remove_member, room.id, target_key)

        def show(outcome: tuple[str, bool]) -> str:
            self._remove_member(room, outcome[0], user.name, reason)
            return room.name

        return writing.addCallback(show)

    def ban(self, user: User, room: Room, target_key: str, banned: bool) -> defer.Deferred:
        """An operator bans an account (a member is kicked: ``banned``), or lifts a ban."""
        self._require_operator(user, room)
        if not banned:
            lifting = self.database.write(transactions.unban_user, room.id, target_key)
            return lifting.addCallback(lambda _: room.name)
        writing = self.database.write(
            transactions.ban_user, room.id, target_key, user.name, self.now()
        )

        def show(outcome: rows.Banned) -> str:
            if outcome.was_member:
                self._remove_member(room, outcome.name, user.name, "banned")
            return room.name

        return writing.addCallback(show)

    def set_private(self, user: User, room: Room, private: bool) -> defer.Deferred:
        """An operator makes a room private (members and the invited only) or public."""
        self._require_operator(user, room)
        writing = self.database.write(transactions.set_private, room.id, private)

        def done(_) -> str:
            room.private = private
            return room.name

        return writing.addCallback(done)

    def invite(self, user: User, room: Room, target_key: str) -> defer.Deferred:
        """Invite a user: any member of a public room, an operator of a private one.

        The invitation lets the user into a private room once; a user with
        no session is shown it at their next login.
        """
        if room.private:
            self._require_operator(user, room)
        online = target_key in self.users
        writing = self.database.write(
            transactions.invite_user, room.id, target_key, user.name, self.now(), online
        )

        def show(_name: str) -> str:
            target = self.users.get(target_key)
            if target is not None:
                target.deliver(Invited(room.name, user.name))
            return room.name

        return writing.addCallback(show)

    # --- presence ----------------------------------------------------------

    def set_away(self, user: User, text: str) -> defer.Deferred:
        """Set (or with empty text clear) a user's away text; fire with it."""
        writing = self.database.write(transactions.set_away, user.key, text)

        def done(_) -> str:
            user.away = text
            for watcher in self.away_watchers:
                watcher(user, text)
            return text

        return writing.addCallback(done)

    def whois(self, session: Session, target_key: str) -> defer.Deferred:
        """Fire with what is known of an account, as ``session`` may see it (shared rooms)."""
        reading = self.database.read(transactions.whois, target_key, session.user.key)

        def known(found: rows.Whois) -> WhoisInfo:
            online = self.users.get(target_key)
            away = found.away if online is None else online.away
            rooms = tuple(found.shared_rooms)
            return WhoisInfo(found.name, online is not None, found.last_seen, rooms, away)

        return reading.addCallback(known)

    def _leave(self, user: User, room: Room, announce: bool = True) -> None:
        room.remove(user)
        if announce:
            room.broadcast(Parted(room.name, user.name))
        self._forget_if_empty(room)

    def forget_history_before(self, before: int) -> None:
        """Drop recent messages older than ``before`` (ms) from loaded rooms: retention."""
        for room in self.rooms.values():
            while room.recent and room.recent[0].at < before:
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

    def post(
        self,
        user: User,
        room: Room,
        text: str,
        kind: str = rows.SAY,
        origin: int | None = None,
    ) -> defer.Deferred:
        """Commit a room message, then show it to every member; fire with the room's name.

        Messages committed in one reactor turn go out together at its end
        (``flush``), each session getting them in one write; the Deferred
        fires after that, so the sender sees its message before the ``OK``.
        """
        now = self.now()
        message_id = self.message_ids.next(now)
        committing = self.database.write(
            transactions.post_room_message,
            room.id,
            user.name,
            text,
            now,
            kind,
            user.account_id,
            message_id,
        )
        def queue(seq: int) -> defer.Deferred:
            self.telemetry.room_message(room.name, user.name, text)
            room.queue(RoomMessage(room.name, user.name, text, now, message_id, seq, kind, origin))
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

    def direct_message(
        self, sender: User, recipient_key: str, text: str, origin: int | None = None
    ) -> defer.Deferred:
        """Deliver a direct message, or store it for an offline recipient.

        Fires with ``(recipient display name, 'delivered' | 'stored', away
        text)``; a stored message is committed before the sender is told so.

        A DM between sessions bound to accounts goes out once both accounts
        are found unchanged: a name deleted and registered again (by the admin
        command line, in another process) before the account events are polled
        is another account, whose DMs the old sessions must not get or send.
        """
        recipient = self.users.get(recipient_key)
        if recipient is not None and (recipient.account_id or sender.account_id):
            checking = self.database.read(
                transactions.account_identities, (sender.key, recipient_key)
            )
            return checking.addCallback(
                self._identities_checked, sender, recipient_key, text, origin
            )
        return self._direct_message(sender, recipient_key, text, origin)

    def _identities_checked(
        self,
        identities: dict,
        sender: User,
        recipient_key: str,
        text: str,
        origin: int | None = None,
    ) -> defer.Deferred:
        if sender.account_id is not None and identities.get(sender.key) != sender.account_id:
            raise ChatError("forbidden", "your account has been deleted")
        recipient = self.users.get(recipient_key)
        bound = recipient is not None and recipient.account_id is not None
        if bound and identities.get(recipient_key) != recipient.account_id:
            # The sessions of the account that had the name: they end now.
            self.end_sessions(recipient, DisconnectReason.ACCOUNT_DELETED)
        return self._direct_message(sender, recipient_key, text, origin)

    def _direct_message(
        self, sender: User, recipient_key: str, text: str, origin: int | None = None
    ) -> defer.Deferred:
        recipient = self.users.get(recipient_key)
        now = self.now()
        message_id = self.message_ids.next(now)
        if recipient is not None:
            message = DirectMessage(sender.name, recipient.name, text, message_id, now, origin)
            recipient.deliver(message)
            if recipient is not sender:
                sender.deliver(message)
            self.telemetry.direct_message(sender.name, recipient.name, text, stored=False)
            return defer.succeed((recipient.name, "delivered", recipient.away))
        storing = self.database.write(
            transactions.post_direct_message,
            recipient_key,
            sender.name,
            text,
            now,
            self.mailbox_limit,
            sender.account_id,
            message_id,
        )

        def stored(recipient_name: str) -> defer.Deferred:
            self.telemetry.direct_message(sender.name, recipient_name, text, stored=True)
            sender.deliver(
                DirectMessage(sender.name, recipient_name, text, message_id, now, origin)
            )
            reading = self.database.read(transactions.away_text, recipient_key)
            # Stored is stored: failing to read the away text must not say otherwise.
            reading.addErrback(lambda failure: log.failure("reading away text", failure) or "")
            return reading.addCallback(lambda away: (recipient_name, "stored", away))

        return storing.addCallback(stored)


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
        events = [StoredMessage(row.sent_at, row.sender, row.text, row.msgid) for row in rows]
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
