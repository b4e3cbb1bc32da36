"""Keep-alive: PING after a silence (CHATD_PING_INTERVAL), BYE idle-timeout (CHATD_PONG_TIMEOUT),
only for clients that answer PINGs (they have sent /pong); TCP keep-alive for everyone."""

import re

from chatd.config import Config
from tests.support import ChatHarness

PING = re.compile(r"PING ([0-9a-f]{8})")


def harness_with(**settings) -> ChatHarness:
    """The shipped keep-alive (120 s, then 60 s to answer) unless ``settings`` say otherwise."""
    return ChatHarness(Config(bcrypt_rounds=4, rate_limit=None, **settings))


def answering(client):
    """Make ``client`` a client that answers PINGs (it sends /pong once); return it."""
    assert client.send("/pong hello") == ["OK pong hello"]
    return client


def token_of(lines: list[str]) -> str:
    """The token of the one PING in ``lines``."""
    assert len(lines) == 1, lines
    match = PING.fullmatch(lines[0])
    assert match, lines
    return match.group(1)


def test_a_silent_session_is_pinged_after_the_interval():
    """At 119.9 s of silence nothing; at 120 s a PING with a token."""
    harness = harness_with()
    client = answering(harness.logged_in("alice"))
    harness.clock.advance(119.9)
    assert client.lines() == []
    harness.clock.advance(0.1)
    token_of(client.lines())


def test_an_answered_ping_keeps_the_session():
    """/pong <token> gets OK pong; no BYE; the next PING after another full silence."""
    harness = harness_with()
    client = answering(harness.logged_in("alice"))
    harness.clock.advance(120)
    token = token_of(client.lines())
    harness.clock.advance(30)
    assert client.send(f"/pong {token}") == [f"OK pong {token}"]
    harness.clock.advance(119.9)
    assert client.lines() == [] and not client.transport.closed
    harness.clock.advance(0.1)
    assert token_of(client.lines()) != token


def test_no_answer_within_the_timeout_is_bye_idle_timeout():
    """59.9 s after the PING still open; at 60 s BYE idle-timeout and the connection closes."""
    harness = harness_with()
    client = answering(harness.logged_in("alice"))
    harness.clock.advance(120)
    token_of(client.lines())
    harness.clock.advance(59.9)
    assert not client.transport.closed
    harness.clock.advance(0.1)
    assert client.lines() == ["BYE idle-timeout"]
    assert client.transport.closed


def test_the_others_see_the_idle_session_part():
    """A real idle-timeout (PING unanswered) ends the session like any close: PART for the room."""
    harness = harness_with()
    bob = harness.logged_in("bob")
    alice = answering(harness.logged_in("alice"))
    harness.clock.advance(120)
    token_of(alice.lines())
    assert bob.lines()[-1] == "JOIN #lobby alice"
    harness.clock.advance(60)
    assert alice.lines() == ["BYE idle-timeout"]
    assert bob.lines() == ["PART #lobby alice"]


def test_any_line_is_an_answer_and_resets_the_silence():
    """A client that talks is not idle: a line at 100 s moves the PING to 220 s."""
    harness = harness_with()
    client = answering(harness.logged_in("alice"))
    harness.clock.advance(100)
    client.send("/ping hello")
    harness.clock.advance(119.9)
    assert client.lines() == []
    harness.clock.advance(0.1)
    token_of(client.lines())
    harness.clock.advance(10)
    client.send("back again")
    harness.clock.advance(60)
    assert not client.transport.closed


def test_an_empty_line_counts_as_activity():
    """Pressing enter in telnet keeps the session, though it gets no reply."""
    harness = harness_with()
    client = answering(harness.logged_in("alice"))
    harness.clock.advance(120)
    token_of(client.lines())
    assert client.send("") == []
    harness.clock.advance(60)
    assert not client.transport.closed


def test_the_intervals_are_settings():
    """CHATD_PING_INTERVAL=5 and CHATD_PONG_TIMEOUT=2."""
    harness = harness_with(ping_interval_seconds=5.0, pong_timeout_seconds=2.0)
    client = answering(harness.logged_in("alice"))
    harness.clock.advance(5)
    token_of(client.lines())
    harness.clock.advance(2)
    assert client.lines() == ["BYE idle-timeout"]


def test_keep_alive_can_be_off():
    """CHATD_PING_INTERVAL=off: a day of silence and nothing happens."""
    harness = harness_with(ping_interval_seconds=None)
    client = harness.logged_in("alice")
    harness.clock.advance(86400)
    assert client.lines() == [] and not client.transport.closed


def test_no_ping_before_login():
    """Before login the login timeout applies instead of keep-alive."""
    harness = harness_with(login_timeout_seconds=1000.0)
    client = harness.client()
    harness.clock.advance(999)
    assert client.lines() == []


def test_a_closed_session_leaves_no_timer():
    """Closing cancels the keep-alive timer."""
    harness = harness_with()
    client = answering(harness.logged_in("alice"))
    harness.clock.advance(120)
    client.send("/quit")
    assert harness.clock.getDelayedCalls() == []


def test_a_reader_who_never_types_is_never_pinged():
    """An nc user who only reads: no PING and no BYE after a day of silence, messages still come."""
    harness = harness_with()
    reader = harness.logged_in("reader")
    talker = harness.logged_in("talker")
    reader.lines()
    for hour in range(24):
        harness.clock.advance(3600)
        talker.send(f"hour {hour}")
    assert reader.lines() == [f"MSG #lobby talker hour {h}" for h in range(24)]
    assert not reader.transport.closed


def test_a_ping_does_not_make_a_client_answer_pings():
    """A person who types /ping once is not pinged later: only /pong shows a client answers."""
    harness = harness_with()
    client = harness.logged_in("alice")
    client.send("/ping are-you-there")
    harness.clock.advance(86400)
    assert client.lines() == [] and not client.transport.closed


def test_a_pong_before_login_counts_from_the_login():
    """A client that sends /pong right after HELLO is watched once it has logged in."""
    harness = harness_with()
    client = answering(harness.client())
    client.login("alice")
    harness.clock.advance(120)
    token_of(client.lines())


def test_a_first_pong_after_login_starts_the_watch():
    """Silent for an hour, then /pong: from then on a silence of 120 s gets a PING."""
    harness = harness_with()
    client = harness.logged_in("alice")
    harness.clock.advance(3600)
    answering(client)
    harness.clock.advance(119.9)
    assert client.lines() == []
    harness.clock.advance(0.1)
    token_of(client.lines())
    answering(client)
    harness.clock.advance(119.9)
    assert client.lines() == []
