"""Several ``--host`` values: parsing them, and the endpoint that goes round them.

``FailoverEndpoint`` is driven with endpoints that answer at once (or refuse
at once), so every step is synchronous; the client against two real servers
is in tests/client/test_client_e2e.py.
"""

from __future__ import annotations

import pytest
from twisted.internet import defer, error
from twisted.internet.interfaces import IStreamClientEndpoint
from zope.interface import implementer

from chatd.client.connection import FailoverEndpoint, host_text, parse_host
from chatd.client.main import build_parser


@implementer(IStreamClientEndpoint)
class FakeEndpoint:
    """An endpoint that connects (to a named placeholder) or refuses, as told."""

    def __init__(self, name: str, up: bool = True) -> None:
        self.name = name
        self.up = up
        self.tries = 0

    def connect(self, factory):
        """Answer with the name when up, refuse the connection when down."""
        self.tries += 1
        if self.up:
            return defer.succeed(self.name)
        return defer.fail(error.ConnectionRefusedError(self.name))


def connect(endpoint: FailoverEndpoint):
    """Connect and return the outcome (a name, or the Failure)."""
    outcome = []
    endpoint.connect(None).addBoth(outcome.append)
    return outcome[0]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("node1", ("node1", 8004)),
        ("node1:9000", ("node1", 9000)),
        ("10.0.0.2:65535", ("10.0.0.2", 65535)),
        ("[::1]:9000", ("::1", 9000)),
        ("[::1]", ("::1", 8004)),
        ("::1", ("::1", 8004)),
    ],
)
def test_a_host_may_carry_its_own_port(text, expected):
    """``name``, ``name:port``, ``[v6]:port``, bare IPv6: the port defaults to --port."""
    assert parse_host(text, 8004) == expected


@pytest.mark.parametrize("text", ["node1:0", "node1:65536", "node1:x", ":9000", "[::1", "[::1]x"])
def test_a_malformed_host_is_refused(text):
    """Ports outside 1..65535, no host, unclosed brackets: ValueError."""
    with pytest.raises(ValueError):
        parse_host(text, 8004)


def test_host_text_brackets_ipv6():
    """What the client shows: host:port, IPv6 in brackets."""
    assert host_text("::1", 8004) == "[::1]:8004"
    assert host_text("node1", 8004) == "node1:8004"


def test_the_command_line_takes_host_several_times():
    """``--host`` may be given several times; none means the default (None here)."""
    options = build_parser().parse_args(["--host", "a", "--host", "b:9"])
    assert options.host == ["a", "b:9"]
    assert build_parser().parse_args([]).host is None


def test_a_bad_host_on_the_command_line_is_a_usage_error(capsys):
    """A malformed --host ends the client with argparse's usage error (status 2)."""
    from chatd.client.main import main

    with pytest.raises(SystemExit) as ended:
        main(["--host", "node1:99999"])
    assert ended.value.code == 2
    assert "--host: the port in 'node1:99999'" in capsys.readouterr().err


def test_the_first_server_first_and_the_next_after_each_connection():
    """Each connection goes to the server after the previous one's, round and round."""
    a, b, c = FakeEndpoint("a"), FakeEndpoint("b"), FakeEndpoint("c")
    seen = []
    endpoint = FailoverEndpoint([a, b, c], on_connected=seen.append)
    assert [connect(endpoint) for _ in range(4)] == ["a", "b", "c", "a"]
    assert seen == [0, 1, 2, 0]


def test_a_server_that_refuses_is_passed_over_for_the_next():
    """a is down: the first connection falls through to b, without waiting."""
    a, b = FakeEndpoint("a", up=False), FakeEndpoint("b")
    endpoint = FailoverEndpoint([a, b])
    assert connect(endpoint) == "b"
    assert (a.tries, b.tries) == (1, 1)
    # Lost: the next connection starts after b, at a (still down), and lands on b.
    assert connect(endpoint) == "b"
    assert (a.tries, b.tries) == (2, 2)


def test_every_server_down_fails_with_the_last_reason_after_one_try_each():
    """Nobody answers: one try each, then the failure (the client's retry policy waits)."""
    a, b = FakeEndpoint("a", up=False), FakeEndpoint("b", up=False)
    endpoint = FailoverEndpoint([a, b])
    outcome = connect(endpoint)
    assert outcome.check(error.ConnectionRefusedError)
    assert str(outcome.value) == "Connection was refused by other side: b."
    assert (a.tries, b.tries) == (1, 1)
    # The next round starts at the next server, so no server is always tried first.
    b.up = True
    assert connect(endpoint) == "b"
    assert (a.tries, b.tries) == (1, 2)


def test_one_server_is_that_server_every_time():
    """One --host: every connection (reconnects included) goes to it."""
    only = FakeEndpoint("only")
    endpoint = FailoverEndpoint([only])
    assert [connect(endpoint) for _ in range(3)] == ["only"] * 3
    with pytest.raises(ValueError):
        FailoverEndpoint([])
