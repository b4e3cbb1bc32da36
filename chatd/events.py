"""What the chat service tells sessions, and how each thing looks on the wire.

An event is built once by the service and handed to every session that
should see it; its wire form is encoded on first use and then shared, so a
room message going to five hundred sessions is formatted and encoded once.
"""

from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from typing import ClassVar

from chatd.line_wire import encode_line


def format_timestamp(milliseconds: int) -> str:
    """Format Unix time in milliseconds as the protocol's UTC timestamp."""
    moment = datetime.fromtimestamp(milliseconds / 1000, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{milliseconds % 1000:03d}Z"


class Event:
    """Base of everything the service delivers; subclasses name their fields."""

    kind: ClassVar[str]
    # How many server lines the event is: one, but for a batch of room messages.
    count: ClassVar[int] = 1

    def fields(self) -> tuple[str, ...]:
        """The fields after the line type, in wire order."""
        raise NotImplementedError

    @cached_property
    def wire(self) -> bytes:
        """The encoded server line, built once however many sessions get it."""
        return encode_line(self.kind, *self.fields())


@dataclass(frozen=True, eq=False)
class RoomMessage(Event):
    """Someone said something in a room."""

    kind = "MSG"
    room: str
    sender: str
    text: str
    timestamp: int
    # The message's id (chatd.ids) and its number in the room's sequence.
    message_id: str = ""
    seq: int = 0

    def fields(self) -> tuple[str, ...]:
        return (self.room, self.sender, self.text)

    def as_history(self) -> "HistoryLine":
        """The same message as it is replayed later."""
        return HistoryLine(
            self.room, self.timestamp, self.sender, self.text, self.message_id, self.seq
        )


@dataclass(frozen=True, eq=False)
class RoomAction(RoomMessage):
    """Someone did something in a room (``/me waves``): ``ACTION <room> <sender> <text>``."""

    kind = "ACTION"

    def as_history(self) -> "HistoryLine":
        """The same action as it is replayed later."""
        return HistoryAction(
            self.room, self.timestamp, self.sender, self.text, self.message_id, self.seq
        )


@dataclass(frozen=True, eq=False)
class RoomMessages(Event):
    """Messages to one room that were committed together, delivered as one write.

    Under load the database commits many messages in one transaction; handing
    each session their lines joined costs one write per session instead of one
    per session and message.
    """

    kind = "MSG"
    messages: tuple[RoomMessage, ...]

    @property
    def count(self) -> int:  # type: ignore[override]
        return len(self.messages)

    @cached_property
    def wire(self) -> bytes:
        """Every message's line, in commit order."""
        return b"".join(message.wire for message in self.messages)


@dataclass(frozen=True, eq=False)
class DirectMessage(Event):
    """A direct message, seen by every session of sender and recipient."""

    kind = "DM"
    sender: str
    recipient: str
    text: str
    # The message's id (chatd.ids), the same whether delivered or stored.
    message_id: str = ""

    def fields(self) -> tuple[str, ...]:
        return (self.sender, self.recipient, self.text)


@dataclass(frozen=True, eq=False)
class Joined(Event):
    """A user became a member of a room."""

    kind = "JOIN"
    room: str
    user: str

    def fields(self) -> tuple[str, ...]:
        return (self.room, self.user)


@dataclass(frozen=True, eq=False)
class Parted(Event):
    """A user stopped being a member of a room."""

    kind = "PART"
    room: str
    user: str

    def fields(self) -> tuple[str, ...]:
        return (self.room, self.user)


@dataclass(frozen=True, eq=False)
class Members(Event):
    """The members of a room now, sorted case-insensitively."""

    kind = "WHO"
    room: str
    members: tuple[str, ...]

    def fields(self) -> tuple[str, ...]:
        return (self.room, " ".join(self.members))


@dataclass(frozen=True, eq=False)
class RoomSummary(Event):
    """One room and how many members it has."""

    kind = "ROOM"
    room: str
    member_count: int

    def fields(self) -> tuple[str, ...]:
        return (self.room, str(self.member_count))


@dataclass(frozen=True, eq=False)
class HistoryLine(Event):
    """A past room message, replayed."""

    kind = "HISTORY"
    room: str
    timestamp: int
    sender: str
    text: str
    # The message's id (chatd.ids) and its number in the room's sequence.
    message_id: str = ""
    seq: int = 0

    def fields(self) -> tuple[str, ...]:
        return (self.room, format_timestamp(self.timestamp), self.sender, self.text)


@dataclass(frozen=True, eq=False)
class HistoryAction(HistoryLine):
    """A past action, replayed: ``HISTORYACTION``, HISTORY's fields under its own type."""

    kind = "HISTORYACTION"


def history_line(
    room: str,
    timestamp: int,
    sender: str,
    text: str,
    kind: str,
    message_id: str = "",
    seq: int = 0,
) -> HistoryLine:
    """The replay of a stored room message of ``kind`` (``say`` or ``action``)."""
    line_type = HistoryAction if kind == "action" else HistoryLine
    return line_type(room, timestamp, sender, text, message_id, seq)


@dataclass(frozen=True, eq=False)
class StoredMessage(Event):
    """A direct message that waited for its recipient to log in."""

    kind = "STORED"
    timestamp: int
    sender: str
    text: str
    # The message's id (chatd.ids), made when it was sent.
    message_id: str = ""

    def fields(self) -> tuple[str, ...]:
        return (format_timestamp(self.timestamp), self.sender, self.text)


@dataclass(frozen=True, eq=False)
class Notice(Event):
    """A line for humans."""

    kind = "INFO"
    text: str

    def fields(self) -> tuple[str, ...]:
        return (self.text,)


@dataclass(frozen=True, eq=False)
class Topic(Event):
    """A room's topic and who set it; empty text: no topic."""

    kind = "TOPIC"
    room: str
    setter: str
    text: str

    def fields(self) -> tuple[str, ...]:
        return (self.room, self.setter, self.text)


@dataclass(frozen=True, eq=False)
class Operators(Event):
    """A room's operators, sorted case-insensitively."""

    kind = "OPS"
    room: str
    operators: tuple[str, ...]

    def fields(self) -> tuple[str, ...]:
        return (self.room, " ".join(self.operators))


@dataclass(frozen=True, eq=False)
class Kicked(Event):
    """``user`` was removed from a room by ``by`` (a kick, or a ban: reason ``banned``)."""

    kind = "KICK"
    room: str
    user: str
    by: str
    reason: str

    def fields(self) -> tuple[str, ...]:
        return (self.room, self.user, self.by, self.reason)


@dataclass(frozen=True, eq=False)
class Invited(Event):
    """``by`` invites the receiving user into a room."""

    kind = "INVITE"
    room: str
    by: str

    def fields(self) -> tuple[str, ...]:
        return (self.room, self.by)


@dataclass(frozen=True, eq=False)
class Away(Event):
    """``user`` is away, saying ``text`` (extension: to a DM's sender, and in /whois)."""

    kind = "AWAY"
    user: str
    text: str

    def fields(self) -> tuple[str, ...]:
        return (self.user, self.text)


@dataclass(frozen=True, eq=False)
class WhoisInfo(Event):
    """One account, for ``/whois`` (extension).

    ``WHOIS <user> <online|offline> <last-seen> <rooms>``: last seen is when
    the user's last session ended (or, online, when they came online; ``-``
    if never), rooms are the rooms the asker shares with them.
    """

    kind = "WHOIS"
    user: str
    online: bool
    last_seen: int | None
    shared_rooms: tuple[str, ...]

    def fields(self) -> tuple[str, ...]:
        seen = "-" if self.last_seen is None else format_timestamp(self.last_seen)
        status = "online" if self.online else "offline"
        return (self.user, status, seen, " ".join(self.shared_rooms))
