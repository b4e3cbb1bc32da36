"""The line protocol's one table of line kinds, field counts and error codes.

The server's encoders, the console client's parser, the bench and the tests
all read ``chatd.frontends.line.wire``; these tests hold each of them to it.
"""

import re

from hypothesis import given
from hypothesis import strategies as st

from chatd.client import lines as client_lines
from chatd.frontends.line import wire as line_wire
from tests.serverproc import ROOT


def test_the_console_client_parses_by_the_servers_table() -> None:
    """The client's field counts and final reply kinds are the very objects of line_wire."""
    assert client_lines.FIELD_COUNTS is line_wire.FIELD_COUNTS
    assert client_lines.FINAL_REPLY_KINDS is line_wire.FINAL_REPLY_KINDS
    for kind, count in line_wire.FIELD_COUNTS.items():
        assert len(client_lines.parse_server_line(kind).fields) == count


def test_every_kind_the_server_writes_is_in_the_table() -> None:
    """Each line kind the line door writes (its renderer's table, HELLO, BYE, OK, ...) is known.

    Every all-capitals string in the door's renderer and protocol is a line
    kind it writes, so each must be in the table.
    """
    door = ROOT / "chatd" / "frontends" / "line"
    sources = "\n".join((door / name).read_text() for name in ("render.py", "protocol.py"))
    written = set(re.findall(r'"([A-Z]{2,})"', sources))
    assert {"MSG", "HELLO", "BYE", "OK", "ERR", "HISTORYACTION"} <= written, "nothing found"
    assert written <= line_wire.LINE_KINDS, written - line_wire.LINE_KINDS


def test_the_version_1_error_codes_are_all_kept() -> None:
    """Codes may be added, never removed: version 1's are all in ERROR_CODES."""
    assert len(line_wire.VERSION_1_ERROR_CODES) == 19
    assert set(line_wire.VERSION_1_ERROR_CODES) <= line_wire.ERROR_CODES
    assert {"too-many-rooms", "mailbox-full", "unavailable"} <= line_wire.ERROR_CODES


@given(
    kind=st.sampled_from(sorted(line_wire.FIELD_COUNTS)),
    words=st.lists(st.text("ab#é", min_size=1, max_size=6), max_size=4),
    rest=st.text("ab #é\t", max_size=12),
)
def test_split_line_undoes_encode_line(kind: str, words: list[str], rest: str) -> None:
    """A line encoded from a kind's fields splits back into them, the last keeping spaces."""
    count = line_wire.FIELD_COUNTS[kind]
    words = words[: count - 1]
    # Fields the line lacks are empty; a rest field follows the words only when all are there.
    full = len(words) == count - 1
    fields = [*words, rest] if full else words + [""] * (count - len(words))
    encoded = line_wire.encode_line(kind, *fields)
    assert encoded.endswith(b"\r\n")
    assert line_wire.split_line(encoded[:-2].decode()) == (kind, fields)


def test_split_line_pads_short_lines_and_keeps_unknown_kinds_whole() -> None:
    """``OK quit`` gets an empty text; an unknown kind keeps the rest as one field."""
    assert line_wire.split_line("OK quit") == ("OK", ["quit", ""])
    assert line_wire.split_line("MSG #a bob hi  there") == ("MSG", ["#a", "bob", "hi  there"])
    assert line_wire.split_line("SPARKLE a b") == ("SPARKLE", ["a b"])
    assert line_wire.encode_line("OK", "quit", "") == b"OK quit\r\n"
