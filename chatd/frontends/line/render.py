"""The line door's rendering of the core's events: one table, one encoding per event.

The core's events (``chatd.core.events``) carry no wire form. This module is
where the line protocol gives each one its line type and fields
(``LINES``), and ``LineEncoder`` encodes an event once however many of the
door's sessions get it: the service hands the very same event object to
every recipient in turn, so a one-entry cache on the door's factory turns
a broadcast to a thousand sessions into one encoding.
"""

from collections.abc import Callable
from datetime import UTC, datetime

from chatd.core.events import (
    ACTION,
    Away,
    DirectHistoryLine,
    DirectMessage,
    Event,
    HistoryLine,
    Invited,
    Joined,
    Kicked,
    Members,
    Notice,
    Operators,
    Parted,
    RoomMessage,
    RoomMessages,
    RoomModeChanged,
    RoomSummary,
    StoredMessage,
    Topic,
    WhoisInfo,
)
from chatd.frontends.line.wire import encode_line


def format_timestamp(milliseconds: int) -> str:
    """Format Unix time in milliseconds as the protocol's UTC timestamp."""
    moment = datetime.fromtimestamp(milliseconds / 1000, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{milliseconds % 1000:03d}Z"


def _room_message(event: RoomMessage) -> tuple[str, ...]:
    # A notice (IRC's NOTICE) is a message like any other here: MSG, and
    # HISTORY when replayed (the protocol's forms are fixed; its kind is kept).
    line_type = "ACTION" if event.kind == ACTION else "MSG"
    return (line_type, event.room, event.sender, event.text)


def _history(event: HistoryLine) -> tuple[str, ...]:
    line_type = "HISTORYACTION" if event.kind == ACTION else "HISTORY"
    return (line_type, event.room, format_timestamp(event.at), event.sender, event.text)


def _mode(event: RoomModeChanged) -> tuple[str, ...]:
    # An extension line (docs/protocol.md): MODE <room> <by> <feature> <on|off> [<user>].
    return ("MODE", event.room, event.by, event.feature, "on" if event.on else "off", event.user)


def _whois(event: WhoisInfo) -> tuple[str, ...]:
    seen = "-" if event.last_seen is None else format_timestamp(event.last_seen)
    status = "online" if event.online else "offline"
    return ("WHOIS", event.user, status, seen, " ".join(event.shared_rooms))


# Each event type's line: its type and fields, in wire order.
LINES: dict[type, Callable[[Event], tuple[str, ...]]] = {
    RoomMessage: _room_message,
    DirectMessage: lambda e: ("DM", e.sender, e.recipient, e.text),
    Joined: lambda e: ("JOIN", e.room, e.user),
    Parted: lambda e: ("PART", e.room, e.user),
    Members: lambda e: ("WHO", e.room, " ".join(e.members)),
    RoomSummary: lambda e: ("ROOM", e.room, str(e.member_count)),
    HistoryLine: _history,
    DirectHistoryLine: lambda e: (
        "HISTORYDM", format_timestamp(e.at), e.sender, e.recipient, e.text
    ),
    StoredMessage: lambda e: ("STORED", format_timestamp(e.at), e.sender, e.text),
    Notice: lambda e: ("INFO", e.text),
    Topic: lambda e: ("TOPIC", e.room, e.setter, e.text),
    Operators: lambda e: ("OPS", e.room, " ".join(e.operators)),
    RoomModeChanged: _mode,
    Kicked: lambda e: ("KICK", e.room, e.user, e.by, e.reason),
    Invited: lambda e: ("INVITE", e.room, e.by),
    Away: lambda e: ("AWAY", e.user, e.text),
    WhoisInfo: _whois,
}


def line_fields(event: Event) -> tuple[str, ...]:
    """An event's line as fields: its line type first (a batch: its first message's)."""
    if isinstance(event, RoomMessages):
        return line_fields(event.messages[0])
    return LINES[type(event)](event)


def line_type(event: Event) -> str:
    """An event's line type (``MSG``, ``DM``, ...), for the door's counters."""
    return line_fields(event)[0]


def encode(event: Event) -> bytes:
    """An event's line(s), encoded: a batch of room messages is its lines in order."""
    if isinstance(event, RoomMessages):
        return b"".join(encode_line(*_room_message(message)) for message in event.messages)
    return encode_line(*LINES[type(event)](event))


class LineEncoder:
    """Encodes events for one door, each event once however many sessions get it.

    The fan-out hands the same event object to every recipient in turn, so
    remembering the last one is enough; ``encodings`` counts the real work.
    """

    __slots__ = ("_last_event", "_last_kind", "_last_wire", "encodings")

    def __init__(self) -> None:
        self._last_event: Event | None = None
        self._last_wire = b""
        self._last_kind = ""
        self.encodings = 0

    def __call__(self, event: Event) -> tuple[bytes, str]:
        """The event's bytes and line type, encoded now unless it was the last one."""
        if event is not self._last_event:
            self._last_wire = encode(event)
            self._last_kind = line_type(event)
            self._last_event = event
            self.encodings += 1
        return self._last_wire, self._last_kind
