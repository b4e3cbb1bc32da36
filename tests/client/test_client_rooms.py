"""The console client and rooms people live in: rendering of TOPIC, OPS, KICK,
INVITE, ACTION, HISTORYACTION, AWAY and WHOIS; operators marked with ``@``;
the new commands, their help and their completion; what the state learns."""

from __future__ import annotations

import datetime

import pytest

from chatd.client.commands import COMMANDS_BY_NAME, complete, help_lines
from chatd.client.lines import parse_server_line
from chatd.client.render import Renderer
from chatd.client.state import ChatState

UTC = datetime.UTC
NOW = datetime.datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
ROOMS = ["#lobby", "#dev"]
USERS = ["bob", "Bella", "carol"]


def render(raw: str, operators: dict[str, set[str]] | None = None) -> str | None:
    """Render a line for alice, colourless, in UTC; ``operators``: room -> names."""
    known = operators or {}
    renderer = Renderer(
        colour=False,
        whoami=lambda: "alice",
        is_operator=lambda room, name: name in known.get(room, set()),
        timezone=UTC,
        now=lambda: NOW,
    )
    return renderer.render(parse_server_line(raw))


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("ACTION #dev bob waves at all", "[#dev] * bob waves at all"),
        (
            "HISTORYACTION #dev 2026-11-25T10:00:00.000Z bob waved",
            "(past 10:00) [#dev] * bob waved",
        ),
        ("TOPIC #dev bob all about dev", "* topic of #dev: all about dev (set by bob)"),
        ("TOPIC #dev *admin", "* *admin cleared the topic of #dev"),
        ("OPS #dev alice bob", "* operators of #dev: @alice, @bob"),
        ("OPS #dev", "* #dev has no operators"),
        ("KICK #dev bob alice spamming", "* bob was kicked from #dev by alice: spamming"),
        ("KICK #dev bob alice banned", "* bob was banned from #dev by alice"),
        ("KICK #dev alice bob", "! you were kicked from #dev by bob"),
        ("KICK #dev alice bob banned", "! you were banned from #dev by bob"),
        ("INVITE #den bob", "* bob invites you to #den; /join #den to accept"),
        (
            "MODE #dev bob moderated on",
            "* bob made #dev moderated (operators and voiced members speak)",
        ),
        ("MODE #dev bob topic-open off", "* bob let only the operators of #dev set the topic"),
        ("MODE #dev bob voice on carol", "* bob gave carol voice in #dev"),
        ("MODE #dev bob ban off carol", "* bob lifted carol's ban from #dev"),
        ("MODE #dev bob colour on", "* bob set colour on in #dev"),
        ("AWAY bob gone fishing", "* bob is away: gone fishing"),
        (
            "WHOIS bob online 2026-11-25T10:00:00.000Z #dev #lobby",
            "* bob: online since 10:00; rooms you share: #dev, #lobby",
        ),
        (
            "WHOIS bob offline 2026-11-25T11:30:00.000Z",
            "* bob: offline, last seen 11:30; rooms you share: none",
        ),
        ("WHOIS carol offline -", "* carol: never logged in; rooms you share: none"),
        ("OK away gone fishing", "* you are marked away: gone fishing"),
        ("OK away", "* you are back"),
        ("OK ban #dev", "* banned from #dev"),
        ("OK unban #dev", "* ban lifted in #dev"),
        ("OK invite #dev", "* invitation to #dev sent"),
        ("OK private #dev", "* privacy of #dev set"),
        ("OK me #dev", None),
        ("OK topic #dev", None),
        ("OK kick #dev", None),
        ("OK whois bob", None),
    ],
)
def test_room_lines_are_rendered_for_people(raw: str, shown: str | None) -> None:
    """Every new line type has its own look: actions as ``* name text``."""
    assert render(raw) == shown


def test_operators_carry_an_at_sign() -> None:
    """In MSG, ACTION and WHO, operators of the room are shown as @name."""
    operators = {"#dev": {"bob"}}
    assert render("MSG #dev bob hi", operators) == "[#dev] <@bob> hi"
    assert render("MSG #lobby bob hi", operators) == "[#lobby] <bob> hi"
    assert render("ACTION #dev bob nods", operators) == "[#dev] * @bob nods"
    assert render("WHO #dev alice bob", operators) == "* in #dev (2): alice, @bob"


def test_the_state_learns_operators_topics_and_kicks() -> None:
    """OPS and TOPIC are kept per room; a KICK of oneself leaves the room."""
    state = ChatState()
    for raw in ("JOIN #lobby alice", "WHO #lobby alice bob", "OK login alice"):
        state.observe(parse_server_line(raw), "/login alice secret")
    for raw in ("JOIN #dev alice", "WHO #dev alice bob", "TOPIC #dev bob hi", "OPS #dev bob"):
        state.observe(parse_server_line(raw), "/join #dev")
    state.observe(parse_server_line("OK join #dev"), "/join #dev")
    assert state.is_operator("#DEV", "Bob") and not state.is_operator("#dev", "alice")
    assert state.topic("#dev") == "hi"
    state.observe(parse_server_line("KICK #dev bob alice"))
    assert state.members("#dev") == ["alice"]
    state.observe(parse_server_line("KICK #dev alice bob banned"))
    assert state.rooms() == ["#lobby"] and state.current_room == "#lobby"
    state.observe(parse_server_line("INVITE #den bob"))
    rooms, users = state.completion_snapshot()
    assert "#den" in rooms and "bob" in users


@pytest.mark.parametrize(
    ("typed", "word", "candidates"),
    [
        ("/to", "/to", ["/topic "]),
        ("/wh", "/wh", ["/who ", "/whois "]),
        ("/topic #d", "#d", ["#dev "]),
        ("/kick #dev b", "b", ["Bella ", "bob "]),
        ("/ban #dev c", "c", ["carol "]),
        ("/invite #dev ", "", ["Bella ", "bob ", "carol "]),
        ("/op #dev B", "B", ["Bella ", "bob "]),
        ("/private #dev o", "o", ["off ", "on "]),
        ("/whois ca", "ca", ["carol "]),
        ("/me waves at c", "c", ["carol "]),
        ("/kick #dev bob because c", "c", ["carol "]),
    ],
)
def test_completion_of_the_room_commands(typed: str, word: str, candidates: list[str]) -> None:
    """Rooms complete where a room goes, people where a user goes, on/off for /private."""
    assert complete(typed, ROOMS, USERS) == (word, candidates)


def test_help_explains_the_room_commands() -> None:
    """Each new command is in the client's help with its usage."""
    text = "\n".join(help_lines())
    for name in ("me", "topic", "op", "deop", "kick", "ban", "unban", "private", "invite"):
        assert COMMANDS_BY_NAME[name].usage in text
    for name in ("away", "whois"):
        assert COMMANDS_BY_NAME[name].usage in text
    assert help_lines("kick") == [
        "/kick <room> <user> [<reason>]  -  remove a member from a room (operators only)"
    ]
