"""Rendering of every server line type for people, with and without colour."""

from __future__ import annotations

import datetime
import io

import pytest

from chatd.client.lines import FIELD_COUNTS, parse_server_line
from chatd.client.render import Renderer, colour_wanted, defang, raw_text

UTC = datetime.UTC
BERLIN_WINTER = datetime.timezone(datetime.timedelta(hours=1))
NOW = datetime.datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def plain_renderer(me: str | None = "alice") -> Renderer:
    """A colourless renderer in a fixed zone (UTC+1) at a fixed moment."""
    return Renderer(colour=False, whoami=lambda: me, timezone=BERLIN_WINTER, now=lambda: NOW)


def render(raw: str, me: str | None = "alice") -> str | None:
    """Render one raw server line without colour."""
    return plain_renderer(me).render(parse_server_line(raw))


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("MSG #lobby bob hi there", "[#lobby] <bob> hi there"),
        ("MSG #lobby alice  two  spaces ", "[#lobby] <alice>  two  spaces "),
        ("DM alice bob see you", "[DM alice -> bob] see you"),
        ("JOIN #lobby bob", "* bob joined #lobby"),
        ("PART #lobby bob", "* bob left #lobby"),
        ("WHO #lobby alice bob carol", "* in #lobby (3): alice, bob, carol"),
        ("WHO #empty", "* in #empty (0): nobody"),
        ("ROOM #lobby 2", "* #lobby (2 members)"),
        ("ROOM #quiet 1", "* #quiet (1 member)"),
        ("ERR not-in-room you are not in #dev", "! not-in-room: you are not in #dev"),
        ("ERR rate-limited", "! rate-limited"),
        ("INFO the server restarts at noon", "* the server restarts at noon"),
        ("BYE shutdown", "* the server closed the connection (shutdown)"),
        ("HELLO chatd 1 welcome to chatd", "* connected to chatd (protocol 1): welcome to chatd"),
        ("OK login alice", "* logged in as alice"),
        ("OK register carol", "* registered carol; now log in with /login carol"),
        ("OK msg bob stored", "* bob is offline; the message is stored until they log in"),
        ("OK passwd", "* password changed"),
        ("OK ping abc", "* pong abc"),
        ("OK frobnicate bob", "* frobnicate bob"),
    ],
)
def test_each_line_type_reads_as_intended(raw: str, shown: str) -> None:
    """Every line type the contract defines has a human form."""
    assert render(raw) == shown


@pytest.mark.parametrize(
    "raw",
    [
        "OK say #lobby",
        "OK join #dev",
        "OK part #dev",
        "OK who #lobby",
        "OK rooms",
        "OK history #lobby",
        "OK help",
        "OK pong 17",
        "OK quit",
        "OK msg bob delivered",
        "PING 17",
        "BYE quit",
    ],
)
def test_acknowledgements_whose_effect_is_visible_stay_quiet(raw: str) -> None:
    """An OK that only confirms what an event line already showed prints nothing."""
    assert render(raw) is None


def test_every_contract_line_type_is_rendered_by_a_handler() -> None:
    """No known type falls through to the unknown-type path (which shows the raw line)."""
    for kind, count in FIELD_COUNTS.items():
        raw = " ".join([kind] + [f"f{index}" for index in range(count)])
        assert render(raw) != raw or kind == "PING"


def test_unknown_line_types_are_shown_as_they_came() -> None:
    """The contract may grow new line types; the client shows them rather than hiding them."""
    assert render("SPARKLE #lobby be nice") == "SPARKLE #lobby be nice"


def test_history_is_marked_as_past_with_local_time() -> None:
    """HISTORY carries UTC; people read their local time, and see that it is not live."""
    shown = render("HISTORY #lobby 2026-11-25T10:00:00.123Z bob good morning")
    assert shown == "(past 11:00) [#lobby] <bob> good morning"


def test_history_from_another_day_shows_the_date() -> None:
    """A time alone would be ambiguous for yesterday's messages."""
    shown = render("HISTORY #lobby 2026-11-23T22:30:00.000Z bob late")
    assert shown == "(past 2026-11-23 23:30) [#lobby] <bob> late"


def test_stored_messages_name_their_recipient_and_are_marked() -> None:
    """STORED lines have no recipient field: it is the logged-in user."""
    shown = render("STORED 2026-11-25T09:15:00.000Z bob while you were out")
    assert shown == "(stored 10:15) [DM bob -> alice] while you were out"


def test_a_bad_timestamp_is_shown_as_received() -> None:
    """A timestamp the client cannot read is still information."""
    assert render("HISTORY #lobby yesterday bob hm") == "(past yesterday) [#lobby] <bob> hm"


def test_control_characters_from_other_users_cannot_reach_the_terminal() -> None:
    """Escape sequences in message text are shown, not obeyed."""
    shown = render("MSG #lobby mallory \x1b[2J\x07gotcha\x9b")
    assert shown == "[#lobby] <mallory> ^[[2J^Ggotcha\\x9b"
    assert "\x1b" not in shown


def test_defang_keeps_ordinary_text_and_turns_tabs_into_spaces() -> None:
    """Unicode text passes; tabs would jump columns unpredictably."""
    assert defang("grüße\tau revoir ✓") == "grüße au revoir ✓"


def test_colours_mark_rooms_names_and_errors() -> None:
    """With colour on, the parts of a line carry SGR codes and end reset."""
    renderer = Renderer(colour=True, whoami=lambda: "alice", timezone=UTC, now=lambda: NOW)
    message = renderer.render(parse_server_line("MSG #lobby bob hi"))
    assert message == "\x1b[36m[#lobby]\x1b[0m \x1b[1m<bob>\x1b[0m hi"
    own = renderer.render(parse_server_line("MSG #lobby alice hi"))
    assert "\x1b[1;32m<alice>\x1b[0m" in own
    error = renderer.render(parse_server_line("ERR no-such-user nobody by that name"))
    assert error == "\x1b[1;31m! no-such-user: nobody by that name\x1b[0m"


def test_no_colour_means_no_escape_sequences_at_all() -> None:
    """Piped output must be clean text."""
    for raw in (
        "MSG #a b c",
        "DM a b c",
        "ERR x y",
        "JOIN #a b",
        "HISTORY #a 2026-11-25T10:00:00Z b c",
    ):
        assert "\x1b" not in render(raw)


class FakeStream(io.StringIO):
    """A text stream that says whether it is a terminal."""

    def __init__(self, tty: bool) -> None:
        super().__init__()
        self._tty = tty

    def isatty(self) -> bool:
        """What the test decided."""
        return self._tty


def test_colour_only_on_a_terminal_without_no_color() -> None:
    """NO_COLOR (any non-empty value) wins over a terminal; a pipe never gets colour."""
    assert colour_wanted(FakeStream(tty=True), {}) is True
    assert colour_wanted(FakeStream(tty=True), {"NO_COLOR": "1"}) is False
    assert colour_wanted(FakeStream(tty=True), {"NO_COLOR": ""}) is True
    assert colour_wanted(FakeStream(tty=False), {}) is False


def test_raw_lines_are_verbatim_in_a_pipe_and_defanged_on_a_terminal() -> None:
    """--raw shows the protocol; only a terminal is protected from escape sequences."""
    line = parse_server_line("MSG #lobby bob \x1b[31mred")
    assert raw_text(line, terminal=False) == "MSG #lobby bob \x1b[31mred"
    assert raw_text(line, terminal=True) == "MSG #lobby bob ^[[31mred"
