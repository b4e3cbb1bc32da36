"""Connection limits per address and in total, and the login timeout."""

import pytest

from chatd.config import Config
from chatd.frontends.limits import ConnectionCounter
from tests.support import ChatHarness, Client

REFUSED = "BYE too-many-connections"


def harness_with(**settings) -> ChatHarness:
    """A harness with the shipped limits except ``settings``; no rate limit."""
    return ChatHarness(Config(bcrypt_rounds=4, rate_limit=None, **settings))


def connect(harness: ChatHarness, host: str = "127.0.0.1") -> tuple[Client, list[str]]:
    """Connect without asserting anything; return the client and its first lines."""
    client = Client(harness, host)
    return client, client.lines()


def test_the_counter_counts_per_address_and_in_total():
    """Admission stops at either limit and a release frees exactly one place."""
    counter = ConnectionCounter(total=3, per_address=2)
    assert counter.admit("a") and counter.admit("a")
    assert not counter.admit("a")
    assert counter.admit("b")
    assert not counter.admit("c")
    counter.release("a")
    assert counter.admit("c")
    assert counter.total == 3 and counter.count("a") == 1


def test_one_address_gets_its_limit_and_no_more():
    """CHATD_MAX_CONNECTIONS_PER_ADDRESS=3: the fourth gets HELLO, then BYE, then is closed."""
    harness = harness_with(max_connections_per_address=3)
    first = [connect(harness)[0] for _ in range(3)]
    assert not any(client.transport.closed for client in first)
    fourth, lines = connect(harness)
    assert lines[0].startswith("HELLO chatd 1 ") and lines[1:] == [REFUSED]
    assert fourth.transport.closed
    assert connect(harness, "198.51.100.1")[1][1:] == []


def test_a_closed_connection_frees_its_place():
    """When one of the three closes, the address may connect once more."""
    harness = harness_with(max_connections_per_address=3)
    clients = [connect(harness)[0] for _ in range(3)]
    assert connect(harness)[1][1:] == [REFUSED]
    clients[0].close()
    replacement, lines = connect(harness)
    assert lines[1:] == [] and not replacement.transport.closed
    assert connect(harness)[1][1:] == [REFUSED]


def test_refused_connections_do_not_take_a_place():
    """A hundred refused attempts later, a freed place is still there to take."""
    harness = harness_with(max_connections_per_address=1)
    only, _ = connect(harness)
    for _ in range(100):
        assert connect(harness)[1][1:] == [REFUSED]
    only.close()
    assert connect(harness)[1][1:] == []


def test_the_total_limit_holds_across_addresses():
    """CHATD_MAX_CONNECTIONS=3: the fourth connection is refused whatever its address."""
    harness = harness_with(max_connections=3)
    clients = [connect(harness, f"198.51.100.{n}")[0] for n in range(3)]
    assert connect(harness, "203.0.113.1")[1][1:] == [REFUSED]
    clients[1].close()
    assert connect(harness, "203.0.113.1")[1][1:] == []


def test_a_refused_connection_answers_nothing():
    """After BYE nothing is read: a line sent along with the connection gets no reply."""
    harness = harness_with(max_connections_per_address=1)
    connect(harness)
    refused, _ = connect(harness)
    assert refused.send("/ping") == []


def test_the_login_timeout_closes_a_connection_that_never_logs_in():
    """CHATD_LOGIN_TIMEOUT (60 s): at 59.9 s still open, at 60 s BYE login-timeout."""
    harness = harness_with()
    client = harness.client()
    client.send("/ping")
    harness.clock.advance(59.9)
    assert client.lines() == [] and not client.transport.closed
    harness.clock.advance(0.1)
    assert client.lines() == ["BYE login-timeout"]
    assert client.transport.closed


def test_talking_does_not_extend_the_login_timeout():
    """Lines before login do not count: only logging in stops the clock."""
    harness = harness_with(login_timeout_seconds=10.0)
    client = harness.client()
    for _ in range(9):
        harness.clock.advance(1.0)
        assert client.send("/ping") == ["OK ping"]
    harness.clock.advance(1.0)
    assert client.lines() == ["BYE login-timeout"]


def test_logging_in_stops_the_login_timeout():
    """A session logged in before the timeout is never told login-timeout."""
    harness = harness_with(login_timeout_seconds=10.0, ping_interval_seconds=None)
    client = harness.client()
    harness.clock.advance(9.9)
    client.login("alice")
    harness.clock.advance(3600)
    assert client.lines() == [] and not client.transport.closed


def test_a_failed_login_does_not_stop_the_login_timeout():
    """Only a successful login counts."""
    harness = harness_with(login_timeout_seconds=10.0)
    client = harness.client()
    client.send("/login nobody password1")
    harness.clock.advance(10.0)
    assert client.lines() == ["BYE login-timeout"]


def test_a_closed_connection_leaves_no_timer_behind():
    """Closing cancels the login timer (task.Clock would still hold it otherwise)."""
    harness = harness_with()
    client = harness.client()
    client.close()
    assert harness.clock.getDelayedCalls() == []


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("CHATD_MAX_CONNECTIONS", "0"),
        ("CHATD_MAX_CONNECTIONS_PER_ADDRESS", "many"),
        ("CHATD_LOGIN_TIMEOUT", "-1"),
        ("CHATD_LOGIN_TIMEOUT", "inf"),
    ],
)
def test_bad_connection_settings_are_refused(variable, value):
    """Each setting is checked at start, naming the variable."""
    from chatd.config import ConfigError

    with pytest.raises(ConfigError, match=variable):
        Config.from_environ({variable: value})
