"""Server lines of the chatd wire protocol, parsed into their fields."""

from __future__ import annotations

from dataclasses import dataclass

# How many fields each line type carries (PROTOCOL.md, "Server lines"); the
# last field is the rest of the line and may contain spaces.
FIELD_COUNTS: dict[str, int] = {
    "HELLO": 3,
    "OK": 2,
    "ERR": 2,
    "MSG": 3,
    "DM": 3,
    "JOIN": 2,
    "PART": 2,
    "WHO": 2,
    "ROOM": 2,
    "HISTORY": 4,
    "STORED": 3,
    "PING": 1,
    "INFO": 1,
    "BYE": 1,
    # Rooms people live in.
    "TOPIC": 3,
    "OPS": 2,
    "KICK": 4,
    "INVITE": 2,
    # chatd's extensions (docs/protocol.md): actions, away, whois.
    "ACTION": 3,
    "HISTORYACTION": 4,
    "AWAY": 2,
    "WHOIS": 4,
}

FINAL_REPLY_KINDS = frozenset({"OK", "ERR"})


@dataclass(frozen=True)
class ServerLine:
    """One line from the server: its type, its fields and the line as received."""

    kind: str
    fields: tuple[str, ...]
    raw: str

    @property
    def is_final_reply(self) -> bool:
        """True for ``OK`` and ``ERR``, the lines that answer one client line each."""
        return self.kind in FINAL_REPLY_KINDS

    @property
    def is_known(self) -> bool:
        """True when the type is one this client knows how to render."""
        return self.kind in FIELD_COUNTS


def parse_server_line(raw: str) -> ServerLine:
    """Split a server line into its type and fields.

    A line with fewer fields than its type has (``OK quit``, ``WHO #empty``) gets
    empty strings for the missing ones, so callers can always unpack. A type this
    client does not know keeps the rest of the line as its single field: the
    contract allows new line types, and they must not break the client.
    """
    kind, _, rest = raw.partition(" ")
    count = FIELD_COUNTS.get(kind, 1)
    fields = rest.split(" ", count - 1) if rest else []
    fields += [""] * (count - len(fields))
    return ServerLine(kind, tuple(fields), raw)


def final_reply_command(line: ServerLine) -> str:
    """The command name an ``OK`` line answers (``say``, ``join``, ...)."""
    return line.fields[0].lower() if line.kind == "OK" else ""
