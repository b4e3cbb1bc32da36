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
from functools import partial

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from chatd.cluster.fanout import LocalFanout
from chatd.cluster.presence import RoomSeat, UserState
from chatd.cluster.sequencer import RoomSequencer
from chatd.core.bulk import EventPages
from chatd.core.errors import ChatError
from chatd.core.events import (
    BAN,
    MODERATED,
    PRIVATE,
    SAY,
    SECRET,
    TOPIC_OPEN,
    VOICE,
    ClientTags,
    DirectMessage,
    Invited,
    Joined,
    Kicked,
    Members,
    Operators,
    Parted,
    RoomMessage,
    RoomModeChanged,
    Roster,
    TagMessage,
    Topic,
    WhoisInfo,
    history_line,
)
from chatd.core.ids import MessageIds
from chatd.core.interfaces import DisconnectReason, IChatClient
from chatd.core.names import fold
from chatd.core.pages import Mailbox
from chatd.core.rooms import HISTORY_ON_JOIN, Room, User
from chatd.core.session import Session
from chatd.ops.telemetry import Telemetry
from chatd.storage import rows, transactions
from chatd.storage.sqlite.database import Database

# Direct messages kept for one offline user (CHATD_MAILBOX_LIMIT's default).
MAILBOX_LIMIT = 1000
# Rooms not loaded here whose newest announced message is remembered (cluster
# mode), for a room that loads while its next message is being announced.
ANNOUNCED_ROOMS_KEPT = 10_000
# Beyond any room's sequence: "no upper bound" for reading a room's messages.
NO_LAST_SEQ = 2**62

log = Logger()


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
        fanout=None,
    ):
        """``fanout`` links the node to the others (chatd/cluster); None: one node alone."""
        self.database = database
        self.fanout = fanout if fanout is not None else LocalFanout()
        self.fanout.attach(self)
        # Cluster mode: the newest sequence number announced for each room not
        # loaded here (a room loading now must catch up to it).
        self._announced_elsewhere: dict[str, int] = {}
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
        # The account-event read in flight, if any, and whether another must
        # follow it (an announcement came while it was reading).
        self._polling: defer.Deferred | None = None
        self._poll_again = False
        # Room events this node recorded and showed itself (a kick made in one
        # of its sessions): its poll skips them, so nobody is told twice.
        self._applied_here: set[int] = set()
        # Cluster mode: users whose state (rooms, operator status, away text)
        # changed this turn, told to the other nodes at its end (WHO there).
        self._presence_changed: set[str] = set()
        self._telling_presence = None
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
        """Read and act on the account events newer than the last one seen: one read at a
        time; asked again while one is reading, another follows it."""
        if self._polling is not None:
            self._poll_again = True
            return defer.succeed(None)
        reading = self.database.read(transactions.account_events_since, self._last_account_event)
        reading.addCallback(self._apply_account_events)
        reading.addErrback(self._account_poll_failed)
        self._polling = reading

        def done(_) -> None:
            self._polling = None
            if self._poll_again:
                self._poll_again = False
                self._poll_account_events()

        reading.addBoth(done)
        return reading

    def account_events_announced(self, event_id: int | None) -> None:
        """Another node (or the admin command line) recorded account event ``event_id``
        (None: one not known by number): read the new events now, not at the next poll."""
        if not self._account_poll.running:
            return  # not started: the first poll starts from the newest event anyway
        if event_id is None or event_id > self._last_account_event:
            self._poll_account_events()

    def _made_here(self, event_id: int | None, show) -> None:
        """A change made in a session here and recorded as room event ``event_id``: ``show``
        it now (unless the poll has shown it already) and tell the other nodes."""
        if event_id is not None and event_id <= self._last_account_event:
            pass  # the poll read it before its commit was reported here: shown
        else:
            if event_id is not None:
                self._applied_here.add(event_id)
            show()
        if event_id is not None:
            self.fanout.account_event(event_id)

    def announce_account_event(self, event_id: int | None) -> None:
        """Tell the other nodes that account event ``event_id`` was recorded here (a
        password change, an account created): they act on it now, not at their next poll."""
        self.fanout.account_event(event_id)

    @staticmethod
    def _account_poll_failed(failure) -> None:
        # A database out of reach (PostgreSQL restarting) logs its outage once itself.
        if failure.check(ChatError) and failure.value.code == "unavailable":
            return
        log.failure("reading account events", failure)

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
            if event.id <= self._last_account_event:
                continue  # read by an earlier read too (they may overlap)
            self._last_account_event = event.id
            if event.id in self._applied_here:
                self._applied_here.discard(event.id)
                continue  # made in a session here, and shown then
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
        # The other nodes end theirs when they read the account's create event.
        self.announce_account_event(None)
        # A guest under the name is the one that registered it (the gate
        # refuses the names of the others): it keeps chatting until it logs in.
        if user is not None and not user.guest:
            self.end_sessions(user, DisconnectReason.ACCOUNT_DELETED)

    def _apply_room_event(self, event: rows.AccountEvent) -> None:
        """Show live sessions a change ``chatd room ...`` made in the database.

        A room nobody online is in needs nothing: it is loaded from the
        database, change included, when someone comes back to it.
        """
        if event.action == "room-invite":
            # The invited user need not be in the room (nor the room loaded here).
            self._invited(event.name_key, event.detail, event.actor or rows.ADMIN)
            return
        room = self.rooms.get(event.room_key)
        if room is None:
            return
        action = event.action.removeprefix("room-")
        # Made in a session (on another node): by that operator; else by the admin.
        by = event.actor or rows.ADMIN
        if action == "topic":
            # Set when it was recorded, by a session or the admin command line.
            room.topic, room.topic_setter, room.topic_time = event.detail, by, event.at
            room.broadcast(Topic(room.name, by, event.detail, event.at))
        elif action == "deop" and room.drop_guest_operator(event.name_key):
            # The guest operator of a room, here in memory only, deopped on another node.
            self._operators_changed(room)
            room.broadcast(Operators(room.name, room.operator_names()))
        elif action in ("op", "deop"):
            operators = dict(room.operators)
            if action == "op":
                operators[event.name_key] = event.user_name
            else:
                operators.pop(event.name_key, None)
            self._change_operators(room, operators.values())
        elif action in (PRIVATE, SECRET, MODERATED, TOPIC_OPEN):
            # The room events' names are the features' own.
            self._room_switched(room, action, event.detail == "on", by)
        elif action == "voice" and event.user_name:
            self._voice_changed(room, event.user_name, event.detail == "on", by)
        elif action == "ban" and event.user_name:
            # detail "banned": the account was a member, and is kicked.
            self._banned(room, event.user_name, event.detail == "banned", by)
        elif action == "unban" and event.user_name:
            room.broadcast(RoomModeChanged(room.name, BAN, False, by, event.user_name))
        elif action == "kick" and event.user_name:
            self._remove_member(room, event.user_name, by, event.detail)

    # --- cluster mode: this node's users, as the other nodes list them ------------

    def state_of(self, user: User) -> UserState:
        """``user`` as the other nodes' ``WHO`` shows it: name, away text, rooms."""
        return UserState(user.name, user.away, tuple(
            RoomSeat(room.key, room.name, user.key in room.operators, room.private, room.secret)
            for room in user.rooms.values()
        ), user.invisible, user.oper, user.guest)

    def local_presence(self) -> dict[str, UserState]:
        """Every user with a session here, for a node that asks for them all."""
        return {key: self.state_of(user) for key, user in self.users.items()}

    def _touch(self, user_key: str) -> None:
        """Cluster mode: ``user_key``'s rooms, operator status or away text changed, or its
        last session here ended: tell the other nodes at the end of the turn."""
        if not self.fanout.ordered:
            return
        self._presence_changed.add(user_key)
        if self._telling_presence is None:
            self._telling_presence = self._clock.callLater(0, self._tell_presence)

    def _tell_presence(self) -> None:
        self._telling_presence = None
        changed, self._presence_changed = self._presence_changed, set()
        for key in sorted(changed):
            self._tell_now(key)

    def _tell_now(self, user_key: str) -> None:
        """Tell the other nodes ``user_key``'s state now: before a ``JOIN`` or ``PART`` that
        is announced, so a node that shows it lists (or stops listing) the user already."""
        if not self.fanout.ordered:
            return
        self._presence_changed.discard(user_key)
        user = self.users.get(user_key)
        self.fanout.user_state(user_key, None if user is None else self.state_of(user))

    def member_names(self, room: Room) -> tuple[str, ...]:
        """The members of a loaded room online here or (cluster mode) on another node,
        sorted case-insensitively."""
        elsewhere = self.fanout.presence.members(room.key)
        if not elsewhere:
            return room.member_names()
        names = {key: name for key, (name, _operator) in elsewhere.items()}
        names.update((user.key, user.name) for user in room.members.values())
        return tuple(sorted(names.values(), key=str.lower))

    def roster(self, key: str, asker: User) -> Roster:
        """What ``WHO`` answers ``asker`` for the room of folded name ``key``: its members
        online on any node and its operators; ``no-such-room`` when nobody is in it (or it
        is private or secret and ``asker`` not a member)."""
        room = self.rooms.get(key)
        if room is not None and room.members:
            if room.hidden_from(asker):
                raise ChatError("no-such-room", f"nobody is in {room.name}")
            return Roster(
                room.name, self.member_names(room), room.operator_names(), room.secret
            )
        # Not loaded here: its members are all on other nodes (and not the asker).
        seat = self.fanout.presence.room(key)
        if seat is None or seat.hidden:
            raise ChatError("no-such-room", f"nobody is in {key}")
        members = self.fanout.presence.members(key)
        names = sorted((name for name, _operator in members.values()), key=str.lower)
        operators = sorted((name for name, op in members.values() if op), key=str.lower)
        return Roster(seat.room_name, tuple(names), tuple(operators))

    def visibility_changed(self, user: User) -> None:
        """A session of ``user`` became invisible (``+i``) or visible: the other nodes'
        ``WHO`` follows."""
        self._touch(user.key)

    def is_invisible(self, user_key: str) -> bool:
        """Whether a session of ``user_key``, here or (cluster mode) on another node, is
        invisible (IRC's ``+i``)."""
        user = self.users.get(user_key)
        return (user is not None and user.invisible) or self.fanout.presence.invisible(user_key)

    def is_oper(self, user_key: str) -> bool:
        """Whether ``user_key`` is a server operator here or (cluster mode) on another node
        (IRC's ``*`` in ``WHO`` and 313 in ``WHOIS``); its powers are those of the sessions
        on the node where it was given (``set_server_operator``)."""
        user = self.users.get(user_key)
        return (user is not None and user.oper) or self.fanout.presence.oper(user_key)

    def is_guest(self, user_key: str) -> bool:
        """Whether ``user_key`` is a guest (no account) online here or (cluster mode) on
        another node (IRC's ``WHOIS`` then has no 330, and WHOX's account is 0)."""
        user = self.users.get(user_key)
        if user is not None:
            return user.guest
        return self.fanout.presence.guest(user_key)

    def is_online(self, user_key: str) -> bool:
        """Whether ``user_key`` has a session here or (cluster mode) on another node."""
        return user_key in self.users or self.fanout.presence.user(user_key) is not None

    def away_of(self, user_key: str) -> str:
        """The away text of a user online here or on another node; empty if none."""
        user = self.users.get(user_key)
        if user is not None:
            return user.away
        elsewhere = self.fanout.presence.user(user_key)
        return "" if elsewhere is None else elsewhere.away

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
        if user is not None and user.guest:
            # The account's owner logs in: a guest under its name gives way.
            self.end_sessions(user, DisconnectReason.NICK_TAKEN)
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

    def start_guest(self, name: str, mind: IChatClient) -> Session:
        """A guest's session (``CHATD_GUESTS``): bound to no account, in no room yet.

        The gate has checked that ``name`` is no account's; here it must be
        nobody's online (``user-exists``). The guest gets no stored messages
        and keeps no rooms: it leaves them all when its session ends.
        """
        key = fold(name)
        if key in self.users:
            raise ChatError("user-exists", f"{name} is in use")
        user = self.users[key] = User(name, None, guest=True)
        session = Session(self, user, mind)
        user.sessions.append(session)
        self._touch(key)
        if self.fanout.ordered:
            # Listed on this node, and listening for its DMs from the other nodes.
            arriving = self.fanout.user_arrived(key, name)
            arriving.addErrback(lambda failure: log.failure("listing a guest", failure))
        return session

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
        # Cluster mode: a user already online on another node is a member to
        # everyone already, and its JOINs are not told again.
        present = self.fanout.user_arrived(user.key, user.name)
        announce = True

        def asked(arrival: rows.Arrival) -> defer.Deferred:
            def answered(elsewhere: bool) -> defer.Deferred:
                nonlocal announce
                announce = not elsewhere
                return open_rooms(arrival)

            return present.addCallback(answered)

        def open_rooms(arrival: rows.Arrival) -> defer.Deferred:
            user.away = arrival.away
            opening = [self._room_for(name, state) for name, state in arrival.rooms]
            gathered = defer.gatherResults(opening, consumeErrors=True)
            gathered.addErrback(lambda failure: failure.value.subFailure)
            return gathered.addCallback(enter_rooms, arrival)

        def enter_rooms(rooms: list[Room], arrival: rows.Arrival) -> defer.Deferred:
            # Each room's HISTORY keeps its place in the session's output:
            # the next room's lines, and the invitations, queue behind it.
            shown = [
                defer.maybeDeferred(self._enter, session, room, announce) for room in rooms
            ]
            if session.active:
                for room_name, by in arrival.invites:
                    session.deliver(Invited(room_name, by))
            # The user is in its rooms: the sessions that waited come in now,
            # not once this one has read its history (it may never read it).
            self._arrived(None, user)
            return defer.gatherResults(shown, consumeErrors=True)

        return arriving.addCallback(asked)

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
            if session.invisible:
                self._touch(user.key)  # the others may all be visible
            return
        del self.users[user.key]
        if self.fanout.ordered:
            self._tell_now(user.key)
            self._leave_cluster(user)
        else:
            for room in list(user.rooms.values()):
                self._leave(user, room)
        if user.guest:
            return
        noting = self.database.write(transactions.set_last_seen, user.key, self.now())
        noting.addErrback(lambda failure: log.failure("noting when a user left", failure))

    def _leave_cluster(self, user: User) -> None:
        """Cluster mode: the user's last session here ended; ``PART`` only if none is left
        on any node, told to this node's members and announced to the others once."""
        rooms = list(user.rooms.values())
        for room in rooms:
            room.remove(user)
            room.drop_guest_operator(user.key)
        leaving = self.fanout.user_left(user.key)

        def told(elsewhere: bool) -> None:
            if elsewhere or user.key in self.users:
                return  # still online somewhere (or back here): still a member to all
            for room in rooms:
                current = self.rooms.get(room.key)
                if current is not None:
                    current.broadcast(Parted(room.name, user.name))
                self.fanout.membership(room.key, room.name, user.name, False)

        leaving.addCallback(told)
        leaving.addErrback(lambda failure: log.failure("announcing a departure", failure))
        for room in rooms:
            self._forget_if_empty(room)

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
            state.topic_open,
            state.voiced,
            state.moderated,
            state.secret,
            state.topic_at,
        )
        if self.fanout.ordered:
            self._start_sequencer(room)
        return room

    # --- cluster mode: what the other nodes announced ------------------------

    def _start_sequencer(self, room: Room) -> None:
        """Cluster mode: the room's messages from every node go through a ``RoomSequencer``.

        It starts after the newest message the room was loaded with; one
        announced while it loaded (not loaded yet, so not taken) is learnt
        of, and read back.
        """
        last_seq = room.recent[-1].seq if room.recent else 0
        room.sequencer = RoomSequencer(
            last_seq,
            partial(self._deliver_in_order, room),
            partial(self._read_back, room),
            self._clock,
        )
        newest = self._announced_elsewhere.pop(room.key, 0)
        if newest:
            room.sequencer.learn(newest)

    def _deliver_in_order(self, room: Room, message: RoomMessage, shown) -> None:
        """The sequencer's next message of ``room``: shown at the end of the turn, as a post's."""
        room.queue(message)
        self._unflushed.append((room, shown))
        if self._flushing is None:
            self._flushing = self._clock.callLater(0, self.flush)

    def _read_back(self, room: Room, first: int, last: int | None, limit: int) -> defer.Deferred:
        """A room's committed messages ``first`` to ``last`` from the database (a gap's)."""
        reading = self.database.read(
            transactions.room_messages_between,
            room.id, first, NO_LAST_SEQ if last is None else last, limit,
        )
        name = room.name

        def as_messages(found: list[rows.HistoryRow]) -> list[RoomMessage]:
            return [
                RoomMessage(name, r.sender, r.text, r.sent_at, r.msgid, r.seq, r.kind)
                for r in found
            ]

        return reading.addCallback(as_messages)

    def announced(self, room_key: str, message: RoomMessage) -> None:
        """Another node committed ``message`` (its ``origin`` is None here) to a room."""
        room = self.rooms.get(room_key)
        if room is not None and room.sequencer is not None:
            room.sequencer.offer(message)
            return
        newest = self._announced_elsewhere
        if message.seq > newest.get(room_key, 0):
            if room_key not in newest and len(newest) >= ANNOUNCED_ROOMS_KEPT:
                del newest[next(iter(newest))]
            newest[room_key] = message.seq

    def resync_rooms(self) -> None:
        """Announcements may have been lost (Redis went away): read every loaded room's news."""
        self._announced_elsewhere.clear()
        for room in list(self.rooms.values()):
            if room.sequencer is not None:
                room.sequencer.resync()

    def direct_announced(self, user_key: str, message: DirectMessage) -> None:
        """A DM another node sent, to or from ``user_key``: its sessions here get it."""
        user = self.users.get(user_key)
        if user is not None:
            user.deliver(message)

    def user_gone_elsewhere(self, name: str, last_state: UserState | None = None) -> None:
        """The node ``name`` was on died with its sessions, and no live node has one: this
        node (the one that found it) tells its ``PART`` in each of its rooms, for the cluster.

        An account's rooms are its remembered memberships; a guest remembers none,
        so its rooms are those of ``last_state``, what its node last told of it.
        """
        key = fold(name)
        if key in self.users:
            return  # a session here after all: still a member to everyone
        if last_state is not None and last_state.guest:
            reading = defer.succeed([(seat.room_key, seat.room_name) for seat in last_state.rooms])
        else:
            reading = self.database.read(transactions.member_room_names, key)

        def part(rooms: list[tuple[str, str]]) -> None:
            for room_key, room_name in rooms:
                self.membership_announced(room_key, name, False)
                self.fanout.membership(room_key, room_name, name, False)

        reading.addCallback(part)
        reading.addErrback(lambda failure: log.failure("announcing a dead node's users", failure))

    def membership_announced(
        self, room_key: str, user_name: str, joined: bool, room_name: str = "",
        changed: bool = False, reason: str = "",
    ) -> None:
        """On another node ``user_name`` joined or left a room (a PART saying ``reason``),
        for the whole cluster.

        ``changed``: by ``/join`` or ``/part`` (not by coming online or leaving): the
        membership is the user's, so its sessions here join or leave the room too.
        """
        key = fold(user_name)
        user = self.users.get(key)
        if changed and user is not None and not user.guest:
            if joined and room_key not in user.rooms:
                self._join_here(user, room_name or room_key)
            elif not joined and room_key in user.rooms:
                self._parted(user, user.rooms[room_key], reason)
            return
        room = self.rooms.get(room_key)
        if room is None or key in room.members:
            return
        if changed and not joined and key in room.operators:
            # A member's /part ends its operator status with its membership.
            operators = dict(room.operators)
            del operators[key]
            room.broadcast(Parted(room.name, user_name, reason))
            self._change_operators(room, operators.values())
            return
        if joined:
            room.broadcast(Joined(room.name, user_name))
        else:
            room.broadcast(Parted(room.name, user_name, reason))

    def _join_here(self, user: User, room_name: str) -> None:
        """``user`` joined a room on another node (committed there): its sessions here are
        in it too, told by ``JOIN`` as a further session on one node is."""
        opening = self._open_room(room_name)

        def enter(room: Room) -> None:
            if self.users.get(user.key) is user and user.sessions and room.key not in user.rooms:
                room.add(user)
                self._touch(user.key)
                room.broadcast(Joined(room.name, user.name))
            self._forget_if_empty(room)

        opening.addCallback(enter)
        opening.addErrback(lambda failure: log.failure("joining {room}", failure, room=room_name))

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
        if session.user.guest:
            joining = self.database.write(
                transactions.enter_room_as_guest, name, self.now(), load
            )
            return joining.addCallback(self._guest_entering, session)
        joining = self.database.write(
            transactions.enter_room, name, session.user.key, self.now(), load
        )
        joining.addCallback(lambda found: self._room_for(*found))
        return joining.addCallback(lambda room: self._enter(session, room, changed=True))

    def _guest_entering(self, found, session: Session) -> defer.Deferred:
        """A guest's join: the guest that opened the room (it had no row: no members, no
        history, no state) is its operator, in memory, for as long as it stays there;
        a room that existed before, which accounts may live in, gives a guest no power."""
        name, state, created = found
        opener = created and fold(name) != rows.LOBBY_KEY

        def enter(room: Room):
            return self._enter(session, room, changed=True, guest_operator=opener)

        return self._room_for(name, state).addCallback(enter)

    def _enter(
        self,
        session: Session,
        room: Room,
        announce: bool = True,
        changed: bool = False,
        guest_operator: bool = False,
    ) -> defer.Deferred | str:
        """Put a member's user into a loaded room and make it the session's current room.

        Fires with the room's name (at once, or once its HISTORY is written).
        ``announce`` False: the members know the user already (cluster mode: it
        is online on another node), so no ``JOIN``. ``changed``: a ``/join`` (the user's
        sessions on the other nodes join too), not a user coming online.
        """
        user = session.user
        # Membership is the user's: it joins while any session of it is
        # left, though the one that asked may have gone meanwhile.
        shown = None
        if user.sessions and room.key not in user.rooms:
            if user.guest:
                # A guest's voice is its stay's: one given to an earlier guest of the name
                # on another node (this node was told, and not told it ended) is not its.
                room.voiced.pop(user.key, None)
            if guest_operator and user.guest and not room.members:
                room.add_guest_operator(user)
            room.add(user)
            self._touch(user.key)
            if announce:
                room.broadcast(Joined(room.name, user.name))
                self._tell_now(user.key)
                self.fanout.membership(room.key, room.name, user.name, True, changed=changed)
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
        session.deliver(Members(room.name, self.member_names(room)))
        for line in room.extra_lines():
            session.deliver(line)
        # A snapshot: what the room says from now on comes after it, as MSG.
        return session.mind.deliver_bulk(EventPages(room.recent_history()))

    def part(self, user: User, room: Room, reason: str = "") -> None:
        """``user`` leaves ``room`` (saying ``reason``, if anything); sessions that had it
        current move to their latest."""
        if room.key not in user.rooms:
            return  # gone already: kicked, or the last session ended, meanwhile
        self._parted(user, room, reason)
        self._tell_now(user.key)
        self.fanout.membership(
            room.key, room.name, user.name, False, changed=True, reason=reason
        )

    def _parted(self, user: User, room: Room, reason: str = "") -> None:
        """``user`` left ``room`` (``/part``, here or on another node, saying ``reason``):
        ``PART`` to its members, the user's sessions among them, and out."""
        room.broadcast(Parted(room.name, user.name, reason))
        self._leave(user, room, announce=False)
        # Voice goes with the membership.
        room.voiced.pop(user.key, None)
        for session in user.sessions:
            if session.current is room:
                session.current = user.latest_room()
        if user.key in room.operators:
            operators = dict(room.operators)
            del operators[user.key]
            self._change_operators(room, operators.values())

    # --- moderation --------------------------------------------------------

    def set_server_operator(self, user: User, oper: bool) -> None:
        """Make ``user`` a server operator (an operator of every room), or not.

        The credentials were checked by the gate; the flag is in memory only, on
        this node: every session of the user here has the powers (they are checked
        here, where the session asks), sessions on other nodes do not unless they
        ``OPER`` there too, and it ends with the user's last session here. In
        cluster mode the other nodes are told (the user's state), so their
        ``WHO`` and ``WHOIS`` show it."""
        user.oper = oper
        self._touch(user.key)

    def _require_operator(self, user: User, room: Room) -> None:
        """Only an operator of ``room``, or a server operator, may go on."""
        if user.key not in room.operators and not user.oper:
            raise ChatError("forbidden", f"only an operator of {room.name} may do that")

    @staticmethod
    def _require_lasting(user: User, what: str) -> None:
        """A guest operator's power ends when it leaves: it may not leave behind what
        only an operator could undo (a ban, a private room nobody could invite to)."""
        if user.guest and not user.oper:
            raise ChatError("forbidden", f"guests may not {what}: log in to do that")

    def _listed_elsewhere(self, room: Room, target_key: str) -> str:
        """The name another node of a cluster lists ``target_key`` under as a member of
        ``room`` when it has no session here ('' otherwise): if no account has the name
        it is a guest there, whose memberships, voice and operator status live only in
        its node's memory, so a change to it is the room event alone."""
        if target_key in self.users:
            return ""
        listed = self.fanout.presence.members(room.key).get(target_key)
        return "" if listed is None else listed[0]

    def set_voice(self, user: User, room: Room, target_key: str, voice: bool) -> defer.Deferred:
        """An operator gives a member voice (IRC's ``+v``: it may speak in a moderated
        room) or takes it; fire with the room's name. A guest's voice is kept in
        memory while it stays; an account's with its membership."""
        self._require_operator(user, room)
        target = self.users.get(target_key)
        if target is not None and target.guest:
            if room.key not in target.rooms:
                raise ChatError("no-such-user", f"{target.name} is not a member")
            self._voice_changed(room, target.name, voice, user.name)
            return defer.succeed(room.name)
        # A member listed only by another node may be a guest there: the room
        # event alone voices it (its node keeps the voice in memory).
        writing = self.database.write(
            transactions.change_voice, room.id, room.key, target_key, voice, user.name,
            self.now(), self._listed_elsewhere(room, target_key),
        )

        def show(outcome: tuple[str, int]) -> str:
            name, event_id = outcome
            self._made_here(
                event_id, partial(self._voice_changed, room, name, voice, user.name)
            )
            return room.name

        return writing.addCallback(show)

    @staticmethod
    def _voice_changed(room: Room, name: str, voice: bool, by: str) -> None:
        """``by`` gave ``name`` voice in ``room`` or took it, here or on another node:
        every member here is told."""
        if voice:
            room.voiced[fold(name)] = name
        else:
            room.voiced.pop(fold(name), None)
        room.broadcast(RoomModeChanged(room.name, VOICE, voice, by, name))

    def set_moderated(self, user: User, room: Room, moderated: bool) -> defer.Deferred:
        """An operator lets only operators and voiced members speak (IRC's ``+m``), or
        everyone; not a guest (a moderated room it left would have nobody to lift it).
        Recorded as a room event: every node's copy of the room follows."""
        self._require_operator(user, room)
        self._require_lasting(user, "make a room moderated or not")
        return self._switch_room(
            user, room, transactions.change_moderated, MODERATED, moderated
        )

    def set_topic_open(self, user: User, room: Room, topic_open: bool) -> defer.Deferred:
        """An operator lets every member set the topic (IRC's ``-t``), or only operators.
        Recorded as a room event: every node's copy of the room follows."""
        self._require_operator(user, room)
        return self._switch_room(
            user, room, transactions.change_topic_open, TOPIC_OPEN, topic_open
        )

    def _switch_room(
        self, user: User, room: Room, change, feature: str, on: bool
    ) -> defer.Deferred:
        """Store a room's on/off ``feature`` with ``change`` (a named transaction that also
        records the room event every node follows), then switch it here once and tell
        the members; fire with the room's name."""
        writing = self.database.write(change, room.id, room.key, on, user.name, self.now())

        def done(event_id: int) -> str:
            self._made_here(event_id, partial(self._room_switched, room, feature, on, user.name))
            return room.name

        return writing.addCallback(done)

    def _room_switched(self, room: Room, feature: str, on: bool, by: str) -> None:
        """``by`` switched a room's on/off ``feature`` (private, secret, moderated, topic
        open), here or on another node: in force here, and every member here is told."""
        if feature == PRIVATE:
            room.private = on
        elif feature == SECRET:
            room.secret = on
        elif feature == MODERATED:
            room.moderated = on
        elif feature == TOPIC_OPEN:
            room.topic_open = on
        if feature in (PRIVATE, SECRET):
            # The other nodes' WHO and NAMES hide a private or secret room from those
            # not in it.
            self._operators_changed(room)
        room.broadcast(RoomModeChanged(room.name, feature, on, by))

    def _change_operators(self, room: Room, names: Iterable[str]) -> None:
        """Replace a room's operators, telling its members when they changed."""
        before = room.operator_names()
        room.set_operators(names)
        if room.operator_names() != before:
            self._operators_changed(room)
            room.broadcast(Operators(room.name, room.operator_names()))

    def _operators_changed(self, room: Room) -> None:
        """Cluster mode: the other nodes' ``WHO`` shows this node's members of ``room`` anew
        (their operator status, or the room's privacy, changed)."""
        for key in room.members:
            self._touch(key)

    def _remove_member(self, room: Room, name: str, by: str, reason: str) -> None:
        """``name`` was kicked or banned from ``room`` (committed): ``KICK`` to all, then out."""
        room.broadcast(Kicked(room.name, name, by, reason))
        user = self.users.get(fold(name))
        if user is not None and room.key in user.rooms:
            room.remove(user)
            self._touch(user.key)
            for session in user.sessions:
                if session.current is room:
                    session.current = user.latest_room()
        room.voiced.pop(fold(name), None)
        if room.drop_guest_operator(fold(name)):
            room.broadcast(Operators(room.name, room.operator_names()))
        elif fold(name) in room.operators:
            operators = dict(room.operators)
            del operators[fold(name)]
            self._change_operators(room, operators.values())
        self._forget_if_empty(room)

    def set_topic(self, user: User, room: Room, text: str) -> defer.Deferred:
        """Set a room's topic: an operator, or any member of a room without operators
        or whose topic is open to all (``-t``)."""
        if room.topic_locked():
            self._require_operator(user, room)
        now = self.now()
        writing = self.database.write(
            transactions.change_topic, room.id, room.key, text, user.name, now
        )

        def show(event_id: int) -> str:
            def topic() -> None:
                # The time stored with it, so 333 says the same after a restart.
                room.topic, room.topic_setter, room.topic_time = text, user.name, now
                room.broadcast(Topic(room.name, user.name, text, now))

            self._made_here(event_id, topic)
            return room.name

        return writing.addCallback(show)

    def set_operator(
        self, user: User, room: Room, target_key: str, operator: bool
    ) -> defer.Deferred:
        """An operator makes a member an operator, or not: ``OPS`` to all members.

        A guest is never made one (its status could outlive what it may be
        trusted with); the guest operator of a room it opened may be deopped
        (by itself too): that is in memory only.
        """
        self._require_operator(user, room)
        target = self.users.get(target_key)
        if target is not None and target.guest and room.key in target.rooms:
            if operator:
                if target_key in room.operators:
                    return defer.succeed(room.name)
                raise ChatError(
                    "forbidden", f"{target.name} is a guest: guests are not made operators"
                )
            if room.drop_guest_operator(target_key):
                room.broadcast(Operators(room.name, room.operator_names()))
            return defer.succeed(room.name)
        writing = self.database.write(
            transactions.change_operator, room.id, room.key, target_key, operator, user.name,
            self.now(), self._listed_elsewhere(room, target_key),
        )

        def show(outcome: tuple[str, tuple[str, ...] | None, int]) -> str:
            _name, operators, event_id = outcome
            if operators is None:
                # A guest of another node deopped: the room event is all (its node drops
                # it from the room's operators; this node never had it among them).
                self._made_here(event_id, lambda: None)
                return room.name

            def change() -> None:
                room.set_operators(operators)
                self._operators_changed(room)
                room.broadcast(Operators(room.name, room.operator_names()))

            self._made_here(event_id, change)
            return room.name

        return writing.addCallback(show)

    def kick(self, user: User, room: Room, target_key: str, reason: str) -> defer.Deferred:
        """An operator removes a member: ``KICK`` to all members, the kicked included."""
        self._require_operator(user, room)
        target = self.users.get(target_key)
        if target is not None and target.guest and room.key in target.rooms:
            # A guest's membership is only in memory.
            self._remove_member(room, target.name, user.name, reason)
            return defer.succeed(room.name)
        # A member listed only by another node may be a guest there (no account,
        # its membership in that node's memory): the room event kicks it.
        writing = self.database.write(
            transactions.kick_from_room, room.id, room.key, target_key, user.name, reason,
            self.now(), self._listed_elsewhere(room, target_key),
        )

        def show(outcome: tuple[str, int]) -> str:
            name, event_id = outcome
            self._made_here(event_id, partial(self._remove_member, room, name, user.name, reason))
            return room.name

        return writing.addCallback(show)

    def ban(self, user: User, room: Room, target_key: str, banned: bool) -> defer.Deferred:
        """An operator bans an account (a member is kicked: ``banned``), or lifts a ban."""
        self._require_operator(user, room)
        self._require_lasting(user, "ban or unban")
        if not banned:
            lifting = self.database.write(
                transactions.lift_ban, room.id, room.key, target_key, user.name, self.now()
            )

            def lifted(outcome: tuple[str, int]) -> str:
                name, event_id = outcome
                self._made_here(event_id, partial(
                    room.broadcast, RoomModeChanged(room.name, BAN, False, user.name, name)
                ))
                return room.name

            return lifting.addCallback(lifted)
        # A guest, here or on another node, has no account to ban: refused, saying so.
        target = self.users.get(target_key)
        guest = target.name if target is not None and target.guest else (
            self._listed_elsewhere(room, target_key)
        )
        writing = self.database.write(
            transactions.ban_from_room, room.id, room.key, target_key, user.name, self.now(),
            guest,
        )

        def show(outcome: tuple[rows.Banned, int]) -> str:
            banned, event_id = outcome
            self._made_here(
                event_id, partial(self._banned, room, banned.name, banned.was_member, user.name)
            )
            return room.name

        return writing.addCallback(show)

    def _banned(self, room: Room, name: str, was_member: bool, by: str) -> None:
        """``by`` banned ``name`` from ``room``, here or on another node: every member is
        told, then a member is kicked (``banned``)."""
        room.broadcast(RoomModeChanged(room.name, BAN, True, by, name))
        if was_member:
            self._remove_member(room, name, by, "banned")

    def set_private(self, user: User, room: Room, private: bool) -> defer.Deferred:
        """An operator makes a room private (members and the invited only) or public."""
        self._require_operator(user, room)
        self._require_lasting(user, "make a room private or public")
        return self._switch_room(user, room, transactions.change_private, PRIVATE, private)

    def set_secret(self, user: User, room: Room, secret: bool) -> defer.Deferred:
        """An operator makes a room secret (IRC's ``+s``: listed, and shown to WHO and
        NAMES, for its members only) or not; fire with the room's name.

        A guest operator may too, unlike ``+i``, ``+m`` and bans: secrecy shuts
        nobody out (anyone who knows the name may still join, and every member
        sees the room as before), so what it leaves behind when its stay ends
        costs nobody anything an operator would be needed to give back.
        """
        self._require_operator(user, room)
        return self._switch_room(user, room, transactions.change_secret, SECRET, secret)

    def _invited(self, target_key: str, room_name: str, by: str) -> None:
        """Show ``target_key``'s sessions here an invitation to ``room_name``."""
        target = self.users.get(target_key)
        if target is not None:
            target.deliver(Invited(room_name, by))

    def invite(self, user: User, room: Room, target_key: str) -> defer.Deferred:
        """Invite a user: any member of a public room, an operator of a private one.

        The invitation lets the user into a private room once; a user with
        no session (on any node) is shown it at their next login. In cluster
        mode the invitation is a room event, so the user's sessions on the
        other nodes are shown it at once too.
        """
        if room.private:
            self._require_operator(user, room)
        online = self.is_online(target_key)
        writing = self.database.write(
            transactions.invite_to_room, room.id, room.key, room.name, target_key, user.name,
            self.now(), online,
        )

        def show(outcome: tuple[str, int]) -> str:
            _name, event_id = outcome
            self._made_here(event_id, partial(self._invited, target_key, room.name, user.name))
            return room.name

        return writing.addCallback(show)

    # --- presence ----------------------------------------------------------

    def set_away(self, user: User, text: str) -> defer.Deferred:
        """Set (or with empty text clear) a user's away text; fire with it."""
        writing = self.database.write(transactions.set_away, user.key, text)

        def done(_) -> str:
            user.away = text
            self._touch(user.key)
            for watcher in self.away_watchers:
                watcher(user, text)
            return text

        return writing.addCallback(done)

    def whois(self, session: Session, target_key: str) -> defer.Deferred:
        """Fire with what is known of an account, as ``session`` may see it (shared rooms)."""
        reading = self.database.read(transactions.whois, target_key, session.user.key)

        def known(found: rows.Whois) -> WhoisInfo:
            online = self.is_online(target_key)
            away = self.away_of(target_key) if online else found.away
            rooms = tuple(found.shared_rooms)
            return WhoisInfo(found.name, online, found.last_seen, rooms, away)

        return reading.addCallback(known)

    def _leave(self, user: User, room: Room, announce: bool = True) -> None:
        room.remove(user)
        self._touch(user.key)
        if announce:
            room.broadcast(Parted(room.name, user.name))
        if room.drop_guest_operator(user.key):
            # A guest's operator status ends with its stay.
            room.broadcast(Operators(room.name, room.operator_names()))
        if user.guest:
            room.voiced.pop(user.key, None)
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
            if room.sequencer is not None:
                room.sequencer.stop()

    # --- messages --------------------------------------------------------

    def post(
        self,
        user: User,
        room: Room,
        text: str,
        kind: str = rows.SAY,
        origin: int | None = None,
        tags: ClientTags = (),
    ) -> defer.Deferred:
        """Commit a room message, then show it to every member; fire with the room's name.

        ``tags`` (client-only tags, checked by ``events.client_tags``) go with the
        live message only: history keeps the text and its kind.

        Messages committed in one reactor turn go out together at its end
        (``flush``), each session getting them in one write; the Deferred
        fires after that, so the sender sees its message before the ``OK``.
        """
        if not (room.may_speak(user.key) or user.oper):
            raise ChatError(
                "forbidden", f"{room.name} is moderated: only operators and voiced members speak"
            )
        now = self.now()
        message_id = self.message_ids.next(now)
        if user.guest:
            committing = self.database.write(
                transactions.post_guest_message, room.id, user.name, text, now, kind, message_id
            )
        else:
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
        # The caller's Deferred fires after the flush that showed the message.
        # It is made here, not returned by ``queue``: a Deferred returned from a
        # callback is chained, which costs more than the rest of the hot path.
        shown: defer.Deferred = defer.Deferred()

        def queue(seq: int) -> None:
            self.telemetry.room_message(room.name, user.name, text)
            message = RoomMessage(
                room.name, user.name, text, now, message_id, seq, kind, origin, tags
            )
            sequencer = room.sequencer
            if sequencer is None:
                # One node: the writer reports a room's commits in sequence order.
                room.queue(message)
                self._unflushed.append((room, shown))
            else:
                self.fanout.room_message(room.key, message)
                if not sequencer.committed(message, shown):
                    # Read back by a gap fill already: answered after the next flush.
                    self._unflushed.append((room, shown))
            if self._flushing is None:
                self._flushing = self._clock.callLater(0, self.flush)

        # Refused by the database, or failed while queueing: the caller is told.
        committing.addCallback(queue).addErrback(shown.errback)
        return shown

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
            if shown is not None:
                shown.callback(room.name)

    def direct_message(
        self,
        sender: User,
        recipient_key: str,
        text: str,
        origin: int | None = None,
        kind: str = SAY,
        tags: ClientTags = (),
    ) -> defer.Deferred:
        """Deliver a direct message, or store it for an offline recipient.

        Fires with ``(recipient display name, 'delivered' | 'stored', away
        text)``; a stored message is committed before the sender is told so.
        ``kind`` (``say`` or ``notice``) and the client-only ``tags`` go with a
        delivered message; a stored one keeps its text only (it arrives as said).

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
                self._identities_checked, sender, recipient_key, text, origin, kind, tags
            )
        return self._direct_message(sender, recipient_key, text, origin, kind, tags)

    def _identities_checked(
        self,
        identities: dict,
        sender: User,
        recipient_key: str,
        text: str,
        origin: int | None = None,
        kind: str = SAY,
        tags: ClientTags = (),
    ) -> defer.Deferred:
        if sender.account_id is not None and identities.get(sender.key) != sender.account_id:
            raise ChatError("forbidden", "your account has been deleted")
        recipient = self.users.get(recipient_key)
        bound = recipient is not None and recipient.account_id is not None
        if bound and identities.get(recipient_key) != recipient.account_id:
            # The sessions of the account that had the name: they end now.
            self.end_sessions(recipient, DisconnectReason.ACCOUNT_DELETED)
        return self._direct_message(sender, recipient_key, text, origin, kind, tags)

    def _direct_message(
        self,
        sender: User,
        recipient_key: str,
        text: str,
        origin: int | None = None,
        kind: str = SAY,
        tags: ClientTags = (),
    ) -> defer.Deferred:
        recipient = self.users.get(recipient_key)
        now = self.now()
        message_id = self.message_ids.next(now)
        if recipient is None:
            if self.fanout.ordered:
                return self._direct_message_elsewhere(
                    sender, recipient_key, text, origin, now, message_id, kind, tags
                )
            return self._store_direct_message(
                sender, recipient_key, text, origin, now, message_id, kind, tags
            )
        owners = _history_owners(sender, recipient.key, recipient.guest)
        if not owners:
            # Between two guests: nothing is kept, nothing to wait for.
            return self._deliver_direct(
                sender, recipient, text, origin, now, message_id, kind, tags
            )
        # Kept in the history first: a client that saw the message finds it there.
        recording = self.database.write(
            transactions.record_direct_message,
            sender.name, recipient.name, text, now, message_id, owners,
            kind, sender.account_id,
        )
        recording.addErrback(self._history_unavailable)
        was_guest = recipient.guest

        def recorded(_) -> defer.Deferred:
            current = self.users.get(recipient_key)
            if current is not None:
                return self._deliver_direct(
                    sender, current, text, origin, now, message_id, kind, tags
                )
            if was_guest:
                raise ChatError("no-such-user", f"{recipient.name} has left")
            # Gone while the history was written: the mailbox keeps it for the next login.
            return self._store_direct_message(
                sender, recipient_key, text, origin, now, message_id, kind, tags,
                history=False,
            )

        return recording.addCallback(recorded)

    @staticmethod
    def _history_unavailable(failure: Failure) -> None:
        """A live DM goes out without the database (as it always did): only its history
        is missing. Any other failure (``forbidden``: the sender was deleted) stands."""
        failure.trap(ChatError)
        if failure.value.code != "unavailable":
            return failure
        log.warn("a direct message was delivered without being kept in the history")
        return None

    def _deliver_direct(
        self,
        sender: User,
        recipient: User,
        text: str,
        origin: int | None,
        now: int,
        message_id: str,
        kind: str = SAY,
        tags: ClientTags = (),
    ) -> defer.Deferred:
        """Hand a live DM to both users' sessions (here and, in cluster mode, elsewhere)."""
        message = DirectMessage(
            sender.name, recipient.name, text, message_id, now, origin, kind, tags
        )
        recipient.deliver(message)
        if recipient is not sender:
            sender.deliver(message)
        if self.fanout.ordered:
            # Both users' sessions on the other nodes (the origin is this node's).
            elsewhere = DirectMessage(
                sender.name, recipient.name, text, message_id, now, None, kind, tags
            )
            self.fanout.direct_message(recipient.key, sender.key, elsewhere)
        self.telemetry.direct_message(sender.name, recipient.name, text, stored=False)
        return defer.succeed((recipient.name, "delivered", recipient.away))

    def _direct_message_elsewhere(
        self,
        sender: User,
        recipient_key: str,
        text: str,
        origin: int | None,
        now: int,
        message_id: str,
        kind: str = SAY,
        tags: ClientTags = (),
    ) -> defer.Deferred:
        """Cluster mode, a recipient with no session here: hand the DM to the nodes that have
        one (``delivered``), or store it when none took it (``stored``): Redis away, or the
        recipient offline everywhere."""
        finding = self.database.read(transactions.find_account, recipient_key)

        def found(account: rows.Account | None) -> defer.Deferred:
            elsewhere = self.fanout.presence.user(recipient_key)
            if account is None and elsewhere is not None:
                # No account, online on another node: a guest there. Kept in the
                # sender's history only (a guest keeps none), then announced.
                owners = _history_owners(sender, recipient_key, True)
                if not owners:
                    return announce(None, elsewhere.name, True)
                recording = self.database.write(
                    transactions.record_direct_message,
                    sender.name, elsewhere.name, text, now, message_id, owners, kind,
                    sender.account_id,
                )
                recording.addErrback(self._history_unavailable)
                return recording.addCallback(announce, elsewhere.name, True)
            if account is None:
                # Stored is what refuses an unknown name, as on one node.
                return self._store_direct_message(
                    sender, recipient_key, text, origin, now, message_id, kind, tags
                )
            # Kept in both accounts' history before any node shows it.
            recording = self.database.write(
                transactions.record_direct_message,
                sender.name, account.name, text, now, message_id,
                _history_owners(sender, recipient_key, False), kind, sender.account_id,
            )
            recording.addErrback(self._history_unavailable)
            return recording.addCallback(announce, account.name)

        def announce(_, recipient_name: str, guest: bool = False) -> defer.Deferred:
            message = DirectMessage(
                sender.name, recipient_name, text, message_id, now, None, kind, tags
            )
            announcing = self.fanout.direct_message(recipient_key, sender.key, message)
            return announcing.addCallback(taken, recipient_name, guest)

        def taken(nodes: int, recipient_name: str, guest: bool = False) -> defer.Deferred:
            if not nodes and guest:
                # A guest keeps no mailbox: gone meanwhile, as on one node.
                raise ChatError("no-such-user", f"{recipient_name} has left")
            if not nodes:
                return self._store_direct_message(
                    sender, recipient_key, text, origin, now, message_id, kind, tags,
                    history=False,
                )
            self.telemetry.direct_message(sender.name, recipient_name, text, stored=False)
            return self._direct_sent(
                sender, recipient_key, "delivered",
                DirectMessage(sender.name, recipient_name, text, message_id, now, origin,
                              kind, tags),
            )

        return finding.addCallback(found)

    def _store_direct_message(
        self,
        sender: User,
        recipient_key: str,
        text: str,
        origin: int | None,
        now: int,
        message_id: str,
        kind: str = SAY,
        tags: ClientTags = (),
        history: bool = True,
    ) -> defer.Deferred:
        """Store a DM for a recipient with no session; fire once committed. With
        ``history`` it is kept in the accounts' history (with its ``kind``) in the same
        transaction.

        The store keeps the text and ``kind`` (a notice arrives as one; ``tags``
        are not stored); the sender's sessions see it as sent.
        """
        storing = self.database.write(
            transactions.post_direct_message,
            recipient_key,
            sender.name,
            text,
            now,
            self.mailbox_limit,
            sender.account_id,
            message_id,
            history and not sender.guest,
            kind,
        )

        def stored(recipient_name: str) -> defer.Deferred:
            self.telemetry.direct_message(sender.name, recipient_name, text, stored=True)
            return self._direct_sent(
                sender, recipient_key, "stored",
                DirectMessage(sender.name, recipient_name, text, message_id, now, origin,
                              kind, tags),
            )

        return storing.addCallback(stored)

    def _direct_sent(
        self, sender: User, recipient_key: str, outcome: str, message: DirectMessage
    ) -> defer.Deferred:
        """Show a sent DM to the sender's sessions; fire with (recipient, outcome, away text).

        Sent is sent: failing to read the away text must not say otherwise.
        """
        sender.deliver(message)
        reading = self.database.read(transactions.away_text, recipient_key)
        reading.addErrback(lambda failure: log.failure("reading away text", failure) or "")
        return reading.addCallback(lambda away: (message.recipient, outcome, away))

    # --- client-only tags (IRC's TAGMSG) ------------------------------------

    def tag_room(
        self, user: User, room: Room, tags: ClientTags, origin: int | None = None
    ) -> str:
        """Show client-only ``tags`` (no text) to every member of ``room`` now; not stored.

        Returns the room's name. In cluster mode the members on other nodes
        get it too (``fanout.tag_message``), live and unordered with messages.
        """
        now = self.now()
        event = TagMessage(user.name, room.name, tags, self.message_ids.next(now), now, origin)
        room.broadcast(event)
        if self.fanout.ordered:
            self.fanout.tag_message(room.key, TagMessage(
                user.name, room.name, tags, event.message_id, now
            ))
        return room.name

    def tag_direct(
        self, sender: User, recipient_key: str, tags: ClientTags, origin: int | None = None
    ) -> str:
        """Show client-only ``tags`` to a user online (every session of both users).

        Nothing is stored: a recipient with no session is ``no-such-user``.
        Returns the recipient's display name.
        """
        recipient = self.users.get(recipient_key)
        if recipient is None:
            raise ChatError("no-such-user", "nobody by that name is online")
        now = self.now()
        event = TagMessage(
            sender.name, recipient.name, tags, self.message_ids.next(now), now, origin
        )
        recipient.deliver(event)
        if recipient is not sender:
            sender.deliver(event)
        return recipient.name

    def tag_announced(self, room_key: str, event: TagMessage) -> None:
        """Another node's client-only tags to a room: its members here get them."""
        room = self.rooms.get(room_key)
        if room is not None:
            room.broadcast(event)

def _history_owners(sender: User, recipient_key: str, recipient_guest: bool) -> tuple[str, ...]:
    """Whose history keeps a DM: the folded names of the accounts taking part (no guest)."""
    owners = [] if sender.guest else [sender.key]
    if not recipient_guest and recipient_key not in owners:
        owners.append(recipient_key)
    return tuple(owners)
