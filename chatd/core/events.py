"""What the chat service tells sessions: plain values, in no door's form.

An event is built once by the service and handed to every session that
should see it. It says what happened (a room, a sender, a text, the
message's id and place in its room, when, and which session caused it) and
nothing of how any door shows it: each door renders an event in its own
form, once per event whatever the number of its sessions (each door's
renderer lives with the door; the core knows none of them).

Times are Unix milliseconds (``at``). ``origin`` is the opaque id of the
session whose command caused the event (``Session.origin``), or None: a
door tells its own echo from another session of the same user by it.
"""

from dataclasses import dataclass

# Message kinds: said, or done (``/me waves``).
SAY = "say"
ACTION = "action"


class Event:
    """Base of everything the service delivers."""

    __slots__ = ()

    @property
    def count(self) -> int:
        """How many messages the event is: one, but for a batch of room messages."""
        return 1


@dataclass(frozen=True, eq=False, slots=True)
class RoomMessage(Event):
    """Someone said (``kind`` ``say``) or did (``action``) something in a room."""

    room: str
    sender: str
    text: str
    at: int
    # The message's id (chatd.core.ids) and its number in the room's sequence.
    message_id: str = ""
    seq: int = 0
    kind: str = SAY
    origin: int | None = None

    def as_history(self) -> "HistoryLine":
        """The same message as it is replayed later."""
        return HistoryLine(
            self.room, self.at, self.sender, self.text, self.message_id, self.seq, self.kind
        )


@dataclass(frozen=True, eq=False, slots=True)
class RoomMessages(Event):
    """Messages to one room that were committed together, delivered as one write.

    Under load the database commits many messages in one transaction; handing
    each session their lines joined costs one write per session instead of one
    per session and message.
    """

    messages: tuple[RoomMessage, ...]

    @property
    def count(self) -> int:
        return len(self.messages)


@dataclass(frozen=True, eq=False, slots=True)
class DirectMessage(Event):
    """A direct message, seen by every session of sender and recipient."""

    sender: str
    recipient: str
    text: str
    # The message's id (chatd.core.ids), the same whether delivered or stored.
    message_id: str = ""
    at: int = 0
    origin: int | None = None


@dataclass(frozen=True, eq=False, slots=True)
class Joined(Event):
    """A user became a member of a room."""

    room: str
    user: str


@dataclass(frozen=True, eq=False, slots=True)
class Parted(Event):
    """A user stopped being a member of a room."""

    room: str
    user: str


@dataclass(frozen=True, eq=False, slots=True)
class Members(Event):
    """The members of a room now, sorted case-insensitively."""

    room: str
    members: tuple[str, ...]


@dataclass(frozen=True, eq=False, slots=True)
class Roster:
    """What ``who`` answers: a room's members and its operators now, each sorted."""

    room: str
    members: tuple[str, ...]
    operators: tuple[str, ...] = ()


@dataclass(frozen=True, eq=False, slots=True)
class RoomSummary(Event):
    """One room and how many members it has."""

    room: str
    member_count: int


@dataclass(frozen=True, eq=False, slots=True)
class HistoryLine(Event):
    """A past room message (``kind`` ``say`` or ``action``), replayed."""

    room: str
    at: int
    sender: str
    text: str
    # The message's id (chatd.core.ids) and its number in the room's sequence.
    message_id: str = ""
    seq: int = 0
    kind: str = SAY


def history_line(
    room: str,
    at: int,
    sender: str,
    text: str,
    kind: str,
    message_id: str = "",
    seq: int = 0,
) -> HistoryLine:
    """The replay of a stored room message of ``kind`` (``say`` or ``action``)."""
    return HistoryLine(room, at, sender, text, message_id, seq, kind)


@dataclass(frozen=True, eq=False, slots=True)
class StoredMessage(Event):
    """A direct message that waited for its recipient to log in."""

    at: int
    sender: str
    text: str
    # The message's id (chatd.core.ids), made when it was sent.
    message_id: str = ""


@dataclass(frozen=True, eq=False, slots=True)
class Notice(Event):
    """A line for humans."""

    text: str


@dataclass(frozen=True, eq=False, slots=True)
class Topic(Event):
    """A room's topic, who set it and when (ms; 0 if unknown); empty text: no topic."""

    room: str
    setter: str
    text: str
    at: int = 0


@dataclass(frozen=True, eq=False, slots=True)
class Operators(Event):
    """A room's operators, sorted case-insensitively."""

    room: str
    operators: tuple[str, ...]


@dataclass(frozen=True, eq=False, slots=True)
class Kicked(Event):
    """``user`` was removed from a room by ``by`` (a kick, or a ban: reason ``banned``)."""

    room: str
    user: str
    by: str
    reason: str


@dataclass(frozen=True, eq=False, slots=True)
class Invited(Event):
    """``by`` invites the receiving user into a room."""

    room: str
    by: str


@dataclass(frozen=True, eq=False, slots=True)
class Away(Event):
    """``user`` is away, saying ``text`` (to a DM's sender, and in /whois)."""

    user: str
    text: str


@dataclass(frozen=True, eq=False, slots=True)
class WhoisInfo(Event):
    """One account, for ``/whois``: online or not, last seen (ms, None if never), shared rooms,
    and its away text (empty: not away)."""

    user: str
    online: bool
    last_seen: int | None
    shared_rooms: tuple[str, ...]
    away: str = ""
