"""The IRC door's rate budget (issue 9, item 12): every line costs it, empty ones too.

As on the line door, an empty (or blank) line gets no reply but takes a line
token and its bytes from the byte budget; a flood of them ends the connection.
"""

import pytest

from chatd.config import Config, RateLimit
from chatd.frontends.irc.message import parse
from tests.frontends.irc.support import IRCHarness


def limited(**settings) -> IRCHarness:
    """An IRC harness with the shipped rate limits (10/40 lines, 16K/256K bytes) or ``settings``."""
    return IRCHarness(Config(bcrypt_rounds=4, **settings))


def refused(lines: list[str]) -> bool:
    """Whether ``lines`` is exactly one ``FAIL * RATE_LIMITED``."""
    return len(lines) == 1 and lines[0].startswith(":chatd FAIL * RATE_LIMITED ")


@pytest.mark.parametrize("bytewise", [False, True])
def test_empty_lines_cost_a_token_and_get_no_reply(bytewise):
    """Forty empty and blank lines take the burst of 40: no reply, and the next PING is refused."""
    client = limited().irc_client()
    assert client.send(*([""] * 20 + ["   "] * 20), bytewise=bytewise) == []
    assert refused(client.send("PING late", bytewise=bytewise))
    assert not client.transport.closed


@pytest.mark.parametrize("bytewise", [False, True])
def test_a_flood_of_empty_lines_ends_the_connection(bytewise):
    """40 empty lines pass, 50 more are dropped silently, the 91st closes with ERROR flood."""
    client = limited().irc_client()
    assert client.send(*[""] * 90, bytewise=bytewise) == []
    assert not client.transport.closed
    assert client.send("", bytewise=bytewise) == ["ERROR :Closing link: flood"]
    assert client.transport.closed


def test_65536_empty_lines_in_one_read_are_cut_off():
    """The issue's attack on the IRC door, one read: ERROR flood, the rest is not framed."""
    client = limited().irc_client()
    client.protocol.dataReceived(b"\r\n" * 65536 + b"PING after\r\n")
    assert client.lines() == ["ERROR :Closing link: flood"]
    assert client.transport.closed


def test_blank_lines_cost_their_bytes():
    """CHATD_BYTE_RATE=100/4096: eight lines of 510 spaces (512 bytes) fill it; PING is refused."""
    client = limited(line_limit=1000, byte_rate=RateLimit(100.0, 4096)).irc_client()
    assert client.send(*[" " * 510] * 8) == []
    assert refused(client.send("PING x"))


def test_empty_lines_are_free_when_the_rate_limit_is_off():
    """CHATD_RATE_LIMIT=off: empty lines are ignored, however many."""
    client = limited(rate_limit=None).irc_client()
    client.protocol.dataReceived(b"\r\n" * 65536)
    assert [parse(line).verb for line in client.send("PING after")] == ["PONG"]
