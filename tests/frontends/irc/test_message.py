"""The IRC message parser and serialiser, against the community's test vectors.

The vectors come from the ``irc-parser-tests`` package (ircdocs): every
line of ``msg-split`` must parse to its atoms, every message of ``msg-join``
must serialise to one of its accepted lines, and the masks and hostmasks of
``mask-match`` and ``userhost-split`` must behave as listed.
"""

import pytest

from chatd.frontends.irc.message import (
    MalformedMessage,
    Message,
    build,
    escape_tag_value,
    mask_matches,
    parse,
    serialize,
    split_hostmask,
    split_long_text,
    unescape_tag_value,
)
from tests.programs import require_module

vectors = require_module("parser_tests.data", "irc-parser-tests")


def _ids(cases, key):
    return [str(case.get(key, case.get("desc", "")))[:60] for case in cases]


@pytest.mark.parametrize(
    "case", vectors.msg_split["tests"], ids=_ids(vectors.msg_split["tests"], "input")
)
def test_split_vectors(case):
    """Each line of the msg-split vectors parses into exactly its atoms."""
    atoms = case["atoms"]
    message = parse(case["input"])
    assert message.verb == atoms["verb"]
    assert list(message.params) == atoms.get("params", [])
    assert message.source == atoms.get("source")
    assert dict(message.tags) == (atoms.get("tags") or {})


@pytest.mark.parametrize(
    "case", vectors.msg_join["tests"], ids=_ids(vectors.msg_join["tests"], "desc")
)
def test_join_vectors(case):
    """Each message of the msg-join vectors serialises to one of its accepted lines."""
    atoms = case["atoms"]
    message = Message(
        atoms["verb"], tuple(atoms.get("params", [])), atoms.get("source"), atoms.get("tags") or {}
    )
    assert serialize(message) in case["matches"]


@pytest.mark.parametrize(
    "case", vectors.mask_match["tests"], ids=_ids(vectors.mask_match["tests"], "mask")
)
def test_mask_vectors(case):
    """Masks match what the mask-match vectors list and nothing they list as failing."""
    for candidate in case.get("matches", []):
        assert mask_matches(case["mask"], candidate), candidate
    for candidate in case.get("fails", []):
        assert not mask_matches(case["mask"], candidate), candidate


@pytest.mark.parametrize(
    "case", vectors.userhost_split["tests"], ids=_ids(vectors.userhost_split["tests"], "source")
)
def test_userhost_vectors(case):
    """Hostmasks split into nick, user and host as the vectors say."""
    atoms = case["atoms"]
    mask = split_hostmask(case["source"])
    assert (mask.nick, mask.user, mask.host) == (
        atoms.get("nick", ""),
        atoms.get("user", ""),
        atoms.get("host", ""),
    )


@pytest.mark.parametrize("line", ["", "   ", ":source-only", "@a=b", "@a=b :src  "])
def test_a_line_without_a_command_is_malformed(line):
    """Empty lines, and a prefix or tags with nothing after them, are not messages."""
    with pytest.raises(MalformedMessage):
        parse(line)


def test_round_trip_keeps_every_atom():
    """What is serialised parses back to the same message, tags and trailing spaces included."""
    message = Message(
        "PRIVMSG", ("#lobby", " two  spaces: and a colon"), "alice!alice@chatd", {"msgid": "a;b c"}
    )
    assert parse(serialize(message)) == message


@pytest.mark.parametrize("value", ["", "plain", "a;b", "x y", "back\\slash", "cr\rlf\n", "\\"])
def test_tag_escaping_round_trips(value):
    """Escaping then unescaping a tag value gives it back unchanged."""
    assert unescape_tag_value(escape_tag_value(value)) == value


def test_a_middle_parameter_that_cannot_be_sent_is_refused():
    """A space in a non-final parameter would change the message: serialising refuses it."""
    with pytest.raises(ValueError):
        build("KICK", "#a b", "bob")
    with pytest.raises(ValueError):
        build("MODE", "", "+o")


def test_the_command_is_looked_up_in_upper_case():
    """``privmsg`` and ``PRIVMSG`` are one command."""
    assert parse("privmsg #a :hi").command == "PRIVMSG"


def test_long_text_splits_at_spaces_within_the_byte_budget():
    """A long text is cut into pieces of at most the budget, at spaces where it can be."""
    text = "word " * 100
    pieces = list(split_long_text(text.strip(), 50))
    assert all(len(piece.encode()) <= 50 for piece in pieces)
    assert " ".join(pieces) == text.strip()


def test_long_text_never_cuts_a_character_in_two():
    """Without spaces, a cut falls between UTF-8 characters, never inside one."""
    text = "ä" * 40  # two bytes each
    pieces = list(split_long_text(text, 7))
    assert all(len(piece.encode()) <= 7 for piece in pieces)
    assert "".join(pieces) == text
