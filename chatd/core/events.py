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

import re
from collections.abc import Iterable
from dataclasses import dataclass

from chatd.core.errors import ChatError

# Message kinds: said, done (``/me waves``), or a notice (IRC's ``NOTICE``: a
# message no program should answer automatically). All three are stored.
SAY = "say"
ACTION = "action"
NOTICE = "notice"
KINDS = frozenset({SAY, ACTION, NOTICE})

# Client-only tags (IRCv3 message-tags: ``+draft/reply``, ``+typing``, ...): pairs
# of key and unescaped value that clients attach to a message for each other.
# The core carries them with live messages only (they are not stored), bounded
# by the size IRCv3 gives a client's tags on the wire.
ClientTags = tuple[tuple[str, str], ...]
# The most bytes of client tags a message carries, as written on the wire
# (``key=value`` joined by ``;``, values escaped): IRCv3's 4,094 bytes of tags.
CLIENT_TAGS_MAX_BYTES = 4094
# A client-only tag key: ``+``, an optional vendor (a host name) and ``/``, a name.
_CLIENT_TAG_KEY = re.compile(r"\+(?:[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?/)?[A-Za-z0-9-]+")
# The longest PART reason the core passes on (characters); longer ones are cut.
PART_REASON_MAX = 300


def is_client_tag_key(key: str) -> bool:
    """Whether ``key`` is a client-only tag key: ``+``, an optional ``vendor/``, a name."""
    return _CLIENT_TAG_KEY.fullmatch(key) is not None


def client_tags(pairs: Iterable[tuple[str, str]]) -> ClientTags:
    """Check client-only tags and return them as the core carries them.

    Each key must be a client-only key (``+``, optional ``vendor/``, a name of
    letters, digits and ``-``), given once; a value may not hold NUL. The tags,
    written as on the wire, may take at most ``CLIENT_TAGS_MAX_BYTES``: else
    ``ChatError('bad-arguments')``.
    """
    if not pairs:
        # Most messages carry none: nothing to check.
        return ()
    tags = tuple((str(key), str(value)) for key, value in pairs)
    seen = set()
    size = 0
    for key, value in tags:
        if not is_client_tag_key(key) or key in seen or "\0" in value:
            raise ChatError("bad-arguments", f"not a client-only tag: {key[:40]}")
        seen.add(key)
        size += len(key.encode()) + (1 + _escaped_size(value) if value else 0) + 1
    if size - 1 > CLIENT_TAGS_MAX_BYTES:
        raise ChatError(
            "bad-arguments", f"client-only tags take at most {CLIENT_TAGS_MAX_BYTES} bytes"
        )
    return tags


def _escaped_size(value: str) -> int:
    """The bytes of a tag value escaped for the wire (``;``, space, ``\\``, CR, LF: two)."""
    return len(value.encode()) + sum(value.count(c) for c in "; \\\r\n")


def part_reason(reason: str | None) -> str:
    """A PART reason as the core passes it on: at most ``PART_REASON_MAX`` characters,
    line ends and NUL turned into spaces (no door can carry them)."""
    if not reason:
        return ""
    cleaned = reason.replace("\r", " ").replace("\n", " ").replace("\0", " ")
    return cleaned[:PART_REASON_MAX]


class Event:
    """Base of everything the service delivers."""

    __slots__ = ()

    @property
    def count(self) -> int:
        """How many messages the event is: one, but for a batch of room messages."""
        return 1


@dataclass(frozen=True, eq=False, slots=True)
class RoomMessage(Event):
    """Someone said (``kind`` ``say``), did (``action``) or noticed (``notice``)
    something in a room; ``tags``: the client-only tags it came with (live only)."""

    room: str
    sender: str
    text: str
    at: int
    # The message's id (chatd.core.ids) and its number in the room's sequence.
    message_id: str = ""
    seq: int = 0
    kind: str = SAY
    origin: int | None = None
    tags: ClientTags = ()

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
    """A direct message (``kind`` ``say`` or ``notice``), seen by every session of
    sender and recipient; ``tags``: its client-only tags (live only)."""

    sender: str
    recipient: str
    text: str
    # The message's id (chatd.core.ids), the same whether delivered or stored.
    message_id: str = ""
    at: int = 0
    origin: int | None = None
    kind: str = SAY
    tags: ClientTags = ()


@dataclass(frozen=True, eq=False, slots=True)
class TagMessage(Event):
    """Client-only tags with no text (IRC's ``TAGMSG``: typing, reactions), to a room
    (``target`` starts with ``#``) or a user. Delivered live to the sessions online,
    never stored; doors without client tags ignore it."""

    sender: str
    target: str
    tags: ClientTags
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
    """A user stopped being a member of a room (``reason``: what they said, if anything)."""

    room: str
    user: str
    reason: str = ""


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
    # IRC's +s: the room is secret (shown to its members only).
    secret: bool = False


@dataclass(frozen=True, eq=False, slots=True)
class RoomSummary(Event):
    """One room and how many members it has."""

    room: str
    member_count: int


@dataclass(frozen=True, eq=False, slots=True)
class HistoryLine(Event):
    """A past room message (``kind`` ``say``, ``action`` or ``notice``), replayed."""

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
    """The replay of a stored room message of ``kind`` (``say``, ``action``, ``notice``)."""
    return HistoryLine(room, at, sender, text, message_id, seq, kind)


@dataclass(frozen=True, eq=False, slots=True)
class StoredMessage(Event):
    """A direct message (``kind`` ``say`` or ``notice``) that waited for its recipient
    to log in."""

    at: int
    sender: str
    text: str
    # The message's id (chatd.core.ids), made when it was sent.
    message_id: str = ""
    kind: str = SAY


@dataclass(frozen=True, eq=False, slots=True)
class DirectHistoryLine(Event):
    """A past direct message of a conversation, replayed: ``peer`` is the other side
    (whose conversation it is, as the reader asked for it), ``sender`` wrote it to
    ``recipient``."""

    peer: str
    at: int
    sender: str
    recipient: str
    text: str
    # The message's id (chatd.core.ids), the one it was delivered with.
    message_id: str = ""
    kind: str = SAY


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


# A room's features an operator switches on or off (RoomModeChanged.feature):
# members and the invited only (IRC's +i), listed to members only (+s), only
# operators and the voiced speak (+m), every member may set the topic (-t),
# a member's voice (+v, with ``user``), an account's ban (+b, with ``user``).
PRIVATE = "private"
SECRET = "secret"
MODERATED = "moderated"
TOPIC_OPEN = "topic-open"
VOICE = "voice"
BAN = "ban"
ROOM_FEATURES = frozenset({PRIVATE, SECRET, MODERATED, TOPIC_OPEN, VOICE, BAN})


@dataclass(frozen=True, eq=False, slots=True)
class RoomModeChanged(Event):
    """``by`` switched a room's ``feature`` (one of ``ROOM_FEATURES``) on or off; ``user``:
    whose voice or ban it is (empty for the room's own features). Told to every member,
    on every door and (cluster mode) every node."""

    room: str
    feature: str
    on: bool
    by: str
    user: str = ""


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
