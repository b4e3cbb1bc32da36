"""The line protocol's wire vocabulary, written once.

The server lines' kinds and how many fields each carries, the kinds that end
a command (``OK``, ``ERR``), the error codes, and the helpers that encode a
server line and split one back into its fields. The server's encoders, the
console client's parser, ``scripts/bench.py`` and the tests all read these
tables, so a line kind or an error code added here is known to all of them.

Pure data and functions: no Twisted, no imports from the rest of chatd, so
the console client and the bench can use it without the server.
"""

from __future__ import annotations

# How many fields each server line carries after its kind (docs/protocol.md,
# "Server lines"); the last field is the rest of the line and may hold spaces.
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
    # /history <user>: a past direct message, HISTORYDM <time> <sender> <recipient> <text>.
    "HISTORYDM": 4,
    "AWAY": 2,
    "WHOIS": 4,
    # A room's feature switched: MODE <room> <by> <feature> <on|off> [<user>].
    "MODE": 5,
}
LINE_KINDS = frozenset(FIELD_COUNTS)

# The lines that answer one client line each: every client line gets exactly one.
FINAL_REPLY_KINDS = frozenset({"OK", "ERR"})

# The error codes of protocol version 1: a server may add codes, never remove one.
VERSION_1_ERROR_CODES = (
    "auth-required",
    "bad-credentials",
    "too-many-attempts",
    "already-logged-in",
    "banned",
    "user-exists",
    "invalid-name",
    "weak-password",
    "registration-closed",
    "no-such-user",
    "no-such-room",
    "not-in-room",
    "unknown-command",
    "bad-arguments",
    "line-too-long",
    "bad-encoding",
    "rate-limited",
    "forbidden",
    "server-error",
)
# chatd's extensions (docs/protocol.md).
EXTENSION_ERROR_CODES = (
    "too-many-rooms",
    "mailbox-full",
    "unavailable",
    "kicked",
    "session-ended",
)
ERROR_CODES = frozenset(VERSION_1_ERROR_CODES + EXTENSION_ERROR_CODES)


def encode_line(*fields: str) -> bytes:
    """Join fields with single spaces into one CRLF-terminated server line.

    An empty last field is left out with the space before it (``OK quit``).
    """
    if fields and not fields[-1]:
        fields = fields[:-1]
    return (" ".join(fields) + "\r\n").encode("utf-8")


def split_line(line: str) -> tuple[str, list[str]]:
    """Split a server line (without its line end) into its kind and fields.

    A known kind's line always gives that kind's number of fields: the last
    holds the rest of the line, spaces included, and fields the line lacks
    (``OK quit``, ``WHO #empty``) come back as empty strings. An unknown
    kind (the protocol may gain some) keeps the rest of the line as its
    single field.
    """
    kind, _, rest = line.partition(" ")
    count = FIELD_COUNTS.get(kind, 1)
    fields = rest.split(" ", count - 1) if rest else []
    fields += [""] * (count - len(fields))
    return kind, fields
