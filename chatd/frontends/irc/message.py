"""IRC messages: parsing and serialising lines, with IRCv3 message tags.

Twisted's ``twisted.words.protocols.irc`` cannot serve a modern IRC door: it
does not parse tags, splits parameters on tabs, and fails on UTF-8 split
across reads. This module is small and strict instead: one ``Message`` value,
``parse`` for a decoded line and ``serialize`` for the way back, following
RFC 1459/2812 and the IRCv3 message-tags specification. It is checked
against the community's parser test vectors (``irc-parser-tests``).

It knows nothing of connections or of chatd's core; the IRC door frames
bytes into lines, decodes them, and calls ``parse``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

# The IRC line limit without tags, and the extra room the tags may take
# (IRCv3 message-tags: 4,094 bytes from clients, 8,191 in all).
LINE_LIMIT = 512
TAGS_LIMIT = 8191
CLIENT_TAGS_LIMIT = 4094

_UNESCAPE = {":": ";", "s": " ", "\\": "\\", "r": "\r", "n": "\n"}
_ESCAPE = {";": "\\:", " ": "\\s", "\\": "\\\\", "\r": "\\r", "\n": "\\n"}
_TAG_ESCAPES = re.compile(r"[; \\\r\n]")


class MalformedMessage(ValueError):
    """A line that is not an IRC message (empty, or a prefix or tags without a command)."""


@dataclass(frozen=True, slots=True)
class Message:
    """One IRC message: tags, an optional source, the verb and its parameters.

    ``tags`` maps each tag's key to its unescaped value ("" for a tag without
    one); ``source`` is the prefix without its colon; the last parameter may
    hold spaces (it is sent as the trailing parameter).
    """

    verb: str
    params: tuple[str, ...] = ()
    source: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)

    @property
    def command(self) -> str:
        """The verb in upper case: how the door looks the command up."""
        return self.verb.upper()


def unescape_tag_value(value: str) -> str:
    """Undo message-tags escaping: ``\\:`` is ``;``, ``\\s`` a space, and so on.

    An unknown escape stands for the character itself and a lone backslash at
    the end is dropped, as the specification says.
    """
    if "\\" not in value:
        return value
    out = []
    characters = iter(value)
    for character in characters:
        if character != "\\":
            out.append(character)
            continue
        following = next(characters, None)
        if following is not None:
            out.append(_UNESCAPE.get(following, following))
    return "".join(out)


def escape_tag_value(value: str) -> str:
    """Escape a tag value for the wire (the inverse of ``unescape_tag_value``)."""
    return _TAG_ESCAPES.sub(lambda match: _ESCAPE[match.group(0)], value)


def parse_tags(text: str) -> dict[str, str]:
    """Parse the tags part of a line (without the ``@``); a later duplicate key wins."""
    tags: dict[str, str] = {}
    for item in text.split(";"):
        if not item:
            continue
        key, _, value = item.partition("=")
        if key:
            tags[key] = unescape_tag_value(value)
    return tags


def parse(line: str) -> Message:
    """Parse one line (without its CR LF) into a ``Message``.

    Atoms may be separated by several spaces (RFC 1459's rule, which the
    test vectors follow); a parameter starting with ``:`` is the trailing one
    and keeps the rest of the line, spaces and all.
    """
    rest = line
    tags: dict[str, str] = {}
    if rest.startswith("@"):
        tag_text, _, rest = rest[1:].partition(" ")
        tags = parse_tags(tag_text)
    rest = rest.lstrip(" ")
    source = None
    if rest.startswith(":"):
        source, _, rest = rest[1:].partition(" ")
        rest = rest.lstrip(" ")
    verb, _, rest = rest.partition(" ")
    if not verb:
        raise MalformedMessage("no command in the line")
    params = []
    while rest:
        rest = rest.lstrip(" ")
        if rest.startswith(":"):
            params.append(rest[1:])
            break
        if not rest:
            break
        param, _, rest = rest.partition(" ")
        params.append(param)
    return Message(verb, tuple(params), source, tags)


def serialize_tags(tags: Mapping[str, str]) -> str:
    """The tags part of a line, ``@`` included; "" when there are none."""
    if not tags:
        return ""
    items = (
        key if value == "" else f"{key}={escape_tag_value(value)}" for key, value in tags.items()
    )
    return "@" + ";".join(items)


def serialize(message: Message) -> str:
    """The line for ``message``, without CR LF.

    The last parameter is sent as the trailing one (with ``:``) when it must
    be (it is empty, holds a space, or starts with a colon); no other
    parameter may, and one that does raises ``ValueError``: a door must never
    put a line on the wire that a client would read differently.
    """
    parts = []
    tags = serialize_tags(message.tags)
    if tags:
        parts.append(tags)
    if message.source:
        parts.append(":" + message.source)
    parts.append(message.verb)
    params = message.params
    for param in params[:-1]:
        if not param or " " in param or param.startswith(":"):
            raise ValueError(f"middle parameter {param!r} cannot be sent")
        parts.append(param)
    if params:
        parts.append(trailing(params[-1]))
    return " ".join(parts)


def trailing(param: str) -> str:
    """The last parameter as sent: with the trailing ``:`` when it must have one
    (it is empty, holds a space, or starts with a colon), else as it is."""
    return ":" + param if not param or " " in param or param[0] == ":" else param


def build(
    verb: str, *params: str, source: str | None = None, tags: Mapping[str, str] | None = None
) -> str:
    """Serialise a message given as its parts: ``build("PRIVMSG", "#a", "hi", source=...)``."""
    return serialize(Message(verb, params, source, tags or {}))


@dataclass(frozen=True, slots=True)
class Hostmask:
    """The parts of a ``nick!user@host`` source; a missing part is ""."""

    nick: str
    user: str
    host: str


def split_hostmask(source: str) -> Hostmask:
    """Split ``nick!user@host`` (each part optional) into its parts."""
    rest, _, host = source.partition("@")
    nick, _, user = rest.partition("!")
    return Hostmask(nick, user, host)


def mask_pattern(mask: str, fold=str.lower) -> re.Pattern[str]:
    """A compiled pattern for an IRC mask: ``*`` any run, ``?`` one character.

    Everything else is literal (brackets included, unlike ``fnmatch``);
    matching is done on ``fold``-ed text so it follows the casemapping.
    """
    pieces = (
        ".*" if character == "*" else "." if character == "?" else re.escape(character)
        for character in fold(mask)
    )
    return re.compile("".join(pieces), re.S)


def mask_matches(mask: str, candidate: str, fold=str.lower) -> bool:
    """Tell whether ``candidate`` (a ``nick!user@host``) matches ``mask``."""
    return mask_pattern(mask, fold).fullmatch(fold(candidate)) is not None


def split_long_text(text: str, budget: int) -> Iterable[str]:
    """Split ``text`` into pieces of at most ``budget`` UTF-8 bytes, never inside a character.

    For replies the server must cut to fit the 512-byte line (a long topic,
    a long history line): pieces break at the last space within the budget
    when there is one.
    """
    encoded = text.encode("utf-8")
    while len(encoded) > budget:
        cut = budget
        while cut > 0 and (encoded[cut] & 0xC0) == 0x80:
            cut -= 1  # back to the start of a UTF-8 character
        space = encoded.rfind(b" ", 0, cut)
        if space > 0:
            cut = space
        yield encoded[:cut].decode("utf-8")
        encoded = encoded[cut:].lstrip(b" ") if space > 0 else encoded[cut:]
    yield encoded.decode("utf-8")
