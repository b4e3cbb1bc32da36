"""Parsing server lines into fields, as the contract fixes them."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from chatd.client.lines import parse_server_line

names = st.from_regex(r"[A-Za-z][A-Za-z0-9_.-]{0,31}", fullmatch=True)
rooms = st.from_regex(r"#[A-Za-z0-9_.-]{1,32}", fullmatch=True)
texts = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"))


def test_the_last_field_is_the_rest_of_the_line() -> None:
    """Message text keeps its spaces, inner and trailing."""
    line = parse_server_line("MSG #lobby bob  hello   world ")
    assert line.fields == ("#lobby", "bob", " hello   world ")


def test_missing_trailing_fields_are_empty() -> None:
    """``OK quit`` may end without the space before its empty text."""
    assert parse_server_line("OK quit").fields == ("quit", "")
    assert parse_server_line("WHO #empty").fields == ("#empty", "")
    assert parse_server_line("BYE").fields == ("",)


def test_final_replies_are_recognised() -> None:
    """Only OK and ERR answer a client line."""
    assert parse_server_line("OK say #lobby").is_final_reply
    assert parse_server_line("ERR auth-required log in first").is_final_reply
    assert not parse_server_line("MSG #lobby bob OK").is_final_reply


def test_an_unknown_type_keeps_the_rest_as_one_field() -> None:
    """New line types must parse, whatever their shape."""
    line = parse_server_line("SPARKLE #lobby be nice")
    assert (line.kind, line.fields, line.is_known) == ("SPARKLE", ("#lobby be nice",), False)


@given(room=rooms, sender=names, text=texts)
def test_msg_fields_round_trip(room: str, sender: str, text: str) -> None:
    """Whatever the text, room and sender come back exactly and the text is untouched."""
    line = parse_server_line(f"MSG {room} {sender} {text}")
    assert line.fields == (room, sender, text)


@given(timestamp=st.just("2026-11-25T10:00:00.123Z"), room=rooms, sender=names, text=texts)
def test_history_fields_round_trip(timestamp: str, room: str, sender: str, text: str) -> None:
    """HISTORY has four fields, the last being the text."""
    line = parse_server_line(f"HISTORY {room} {timestamp} {sender} {text}")
    assert line.fields == (room, timestamp, sender, text)
