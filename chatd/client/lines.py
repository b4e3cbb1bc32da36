"""Server lines of the chatd wire protocol, parsed into their fields."""

from __future__ import annotations

from dataclasses import dataclass

from chatd.frontends.line.wire import FIELD_COUNTS, FINAL_REPLY_KINDS, split_line

# The tables live with the server's, in chatd.frontends.line.wire; re-exported for the client.
__all__ = [
    "FIELD_COUNTS",
    "FINAL_REPLY_KINDS",
    "ServerLine",
    "final_reply_command",
    "parse_server_line",
]


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
    kind, fields = split_line(raw)
    return ServerLine(kind, tuple(fields), raw)


def final_reply_command(line: ServerLine) -> str:
    """The command name an ``OK`` line answers (``say``, ``join``, ...)."""
    return line.fields[0].lower() if line.kind == "OK" else ""
