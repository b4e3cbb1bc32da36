"""Rooms and users as the service keeps them in memory while someone is in them.

A ``User`` is an account that has at least one session; rooms count users,
not sessions, as members, so a user with three sessions is one member whose
three sessions all see the room's traffic. Committed messages wait in their
room until the service flushes it at the end of the reactor turn.
"""

from collections import deque
from collections.abc import Iterable
from typing import TYPE_CHECKING

from twisted.internet import defer

from chatd.core.events import (
    Event,
    HistoryLine,
    Operators,
    RoomMessage,
    RoomMessages,
    Topic,
)
from chatd.core.names import fold

HISTORY_ON_JOIN = 50
HISTORY_MAX = 500

if TYPE_CHECKING:
    from chatd.core.pages import Mailbox
    from chatd.core.session import Session


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
        topic_open: bool = False,
        voiced: Iterable[str] = (),
        moderated: bool = False,
        secret: bool = False,
        topic_time: int = 0,
    ) -> None:
        self.id = room_id
        self.name = name
        self.key = fold(name)
        # The members online; every member, online or not, is in the database.
        self.members: dict[str, User] = {}
        self.topic = topic
        self.topic_setter = topic_setter
        # When the topic was set (ms), kept with the room; 0: unknown (set before
        # chatd kept it).
        self.topic_time = topic_time
        self.private = private
        # IRC's MODE -t: every member may set the topic though the room has operators.
        self.topic_open = topic_open
        # IRC's +v and +m: in a moderated room only operators and voiced members
        # speak. Voiced members (folded name -> display name): accounts' voice is
        # kept with their membership, a guest's only here while it stays.
        self.voiced: dict[str, str] = {fold(name): name for name in voiced}
        self.moderated = moderated
        # IRC's +s (and +p): only members see the room listed (/rooms, LIST) and
        # may ask who is in it (WHO, NAMES); anyone may still join it unless it
        # is private too.
        self.secret = secret
        # The guest (CHATD_GUESTS) that opened the room, while it stays: an operator
        # kept only here, never in the database (folded name -> display name).
        self.guest_operators: dict[str, str] = {}
        # Every operator, online or not (and the guest one): folded name -> display name.
        self.operators: dict[str, str] = {}
        self.set_operators(operators)
        # The last messages, replayed to a session that joins. A live message
        # is kept as it came and made a history line only when read
        # (``recent_history``): most are never replayed.
        self.recent: deque[RoomMessage | HistoryLine] = deque(recent, maxlen=HISTORY_ON_JOIN)
        self._unsent: list[RoomMessage] = []
        # Cluster mode: the RoomSequencer that orders every node's messages
        # (chatd/cluster/sequencer.py); None on one node, where the writer does.
        self.sequencer = None

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
        self.recent.append(message)

    def recent_history(self) -> tuple[HistoryLine, ...]:
        """The last messages (at most ``HISTORY_ON_JOIN``) as history lines, oldest first."""
        return tuple(
            line.as_history() if type(line) is RoomMessage else line for line in self.recent
        )

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
        """Replace the operators by ``names`` (display names); the guest operator stays."""
        self.operators = {fold(name): name for name in names}
        self.operators.update(self.guest_operators)

    def add_guest_operator(self, user: "User") -> None:
        """Make the guest that opened the room its operator, in memory only."""
        self.guest_operators[user.key] = user.name
        self.operators[user.key] = user.name

    def drop_guest_operator(self, key: str) -> bool:
        """The guest ``key`` is no operator any more (it left, or was deopped); return
        whether it was one."""
        if self.guest_operators.pop(key, None) is None:
            return False
        self.operators.pop(key, None)
        return True

    def may_speak(self, key: str) -> bool:
        """Whether the user ``key`` may speak here: anyone, unless the room is moderated."""
        return not self.moderated or key in self.operators or key in self.voiced

    def hidden_from(self, user: "User") -> bool:
        """Whether ``user`` may not see who is in the room: it is private or secret, and
        ``user`` is not a member."""
        return (self.private or self.secret) and self.key not in user.rooms

    def topic_locked(self) -> bool:
        """Whether only operators may set the topic: the room has some, and no ``-t``."""
        return bool(self.operators) and not self.topic_open

    def operator_names(self) -> tuple[str, ...]:
        """Operators' display names, sorted case-insensitively."""
        return tuple(sorted(self.operators.values(), key=str.lower))

    def extra_lines(self) -> list[Event]:
        """What a joining session gets after ``WHO``: the topic and the operators, if any."""
        lines: list[Event] = []
        if self.topic:
            lines.append(Topic(self.name, self.topic_setter, self.topic, self.topic_time))
        if self.operators:
            lines.append(Operators(self.name, self.operator_names()))
        return lines


class User:
    """An account with at least one session: Ergo's client, Twisted's avatar owner."""

    # Thousands of sessions: no per-instance __dict__.
    __slots__ = (
        "account_id", "arriving", "away", "guest", "key", "mailbox", "name", "oper", "rooms",
        "sessions",
    )

    def __init__(
        self, name: str, account_id: tuple[int, int] | None = None, guest: bool = False
    ) -> None:
        self.name = name
        # A guest (CHATD_GUESTS) has no account: its rooms live only in memory
        # and its name is free again once its last session ends.
        self.guest = guest
        # The identity (users.id, incarnation) of the account the sessions
        # logged into (None: not known,
        # for sessions started without a checked login, as in tests).
        self.account_id = account_id
        self.key = fold(name)
        # The away text (/away), empty when not away; kept in the database too.
        self.away = ""
        # A server operator (CHATD_OPERATORS, IRC's OPER): an operator of every
        # room. Only in memory, so it ends with the user's last session.
        self.oper = False
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

    @property
    def invisible(self) -> bool:
        """Whether a session of this user here is invisible (IRC's user mode ``+i``)."""
        return any(session.invisible for session in self.sessions)

    def latest_room(self) -> "Room | None":
        """The room this user joined most recently, if any."""
        return next(reversed(self.rooms.values()), None)
