"""Floods (issue 9, items 12 and 14): every line costs rate budget, and every line is answered.

Empty lines cost a line token too (they still get no reply), a byte budget
bounds big lines, and a sender past the limit gets ``ERR rate-limited`` for
each refused line, in line order after the replies still waiting on commits,
before any ``BYE flood``.
"""

import pytest
import pytest_twisted
from twisted.internet import defer

from chatd.config import Config, ConfigError, RateLimit
from tests.netclient import connect, start_server
from tests.support import ChatHarness, SlowDatabase

LIMITED = "ERR rate-limited over 10 lines a second (bursts of 40); line dropped"


def limited(**settings) -> ChatHarness:
    """A harness with the shipped rate limits (10/40 lines, 16K/256K bytes) unless overridden."""
    return ChatHarness(Config(bcrypt_rounds=4, **settings))


@pytest.mark.parametrize("bytewise", [False, True])
def test_empty_lines_cost_a_token_and_get_no_reply(bytewise):
    """Forty empty lines (LF and CR LF) take the burst: no reply, and the next line is refused."""
    client = limited().client()
    client.feed(b"\n\r\n" * 20, bytewise=bytewise)
    assert client.lines() == []
    client.feed(b"/ping late\n", bytewise=bytewise)
    assert client.lines() == [LIMITED]
    assert not client.transport.closed


@pytest.mark.parametrize("bytewise", [False, True])
def test_a_flood_of_empty_lines_ends_in_bye_flood(bytewise):
    """40 empty lines pass, 50 more are dropped silently, the 91st is BYE flood."""
    client = limited().client()
    client.feed(b"\n" * 90, bytewise=bytewise)
    assert client.lines() == [] and not client.transport.closed
    client.feed(b"\n", bytewise=bytewise)
    assert client.lines() == ["BYE flood"]
    assert client.transport.closed


def test_65536_empty_lines_in_one_read_are_cut_off():
    """The issue's attack, one read: BYE flood, and the rest of the read is not framed."""
    client = limited().client()
    client.feed(b"\n" * 65536)
    assert client.lines() == ["BYE flood"]
    assert client.transport.closed


def test_empty_lines_are_free_when_the_rate_limit_is_off():
    """CHATD_RATE_LIMIT=off: empty lines are framed in linear time and ignored."""
    client = limited(rate_limit=None).client()
    client.feed(b"\n" * 65536 + b"/ping after\n")
    assert client.lines() == ["OK ping after"]


def test_a_refilled_bucket_takes_empty_lines_again():
    """A tenth of a second after the burst, one more empty line is fine and then a ping is not."""
    harness = limited()
    client = harness.client()
    client.feed(b"\n" * 40)
    harness.clock.advance(0.1)
    client.feed(b"\n/ping x\n")
    assert client.lines() == [LIMITED]


def test_the_byte_budget_refuses_big_lines_past_its_burst():
    """CHATD_BYTE_RATE=100/4K with 1000-byte lines: four pass, the fifth is refused for bytes."""
    client = limited(line_limit=1000, byte_rate=RateLimit(100.0, 4096)).client()
    line = b"/ping " + b"x" * 993 + b"\n"
    client.feed(line * 5)
    replies = client.lines()
    assert replies[:4] == ["OK ping " + "x" * 993] * 4
    assert replies[4:] == [
        "ERR rate-limited over 100 bytes a second (bursts of 4096); line dropped"
    ]
    # Small lines still pass on the line budget while bytes remain (96 of them).
    assert client.send("/ping a") == ["OK ping a"]


def test_the_byte_budget_refills_at_its_rate():
    """Ten seconds at 100 bytes a second buy one more 1000-byte line, exactly."""
    harness = limited(line_limit=1000, byte_rate=RateLimit(100.0, 4000))
    client = harness.client()
    line = b"/ping " + b"x" * 993 + b"\n"
    client.feed(line * 4)
    assert len(client.lines()) == 4
    harness.clock.advance(9.9)
    client.feed(line)
    assert client.lines()[0].startswith("ERR rate-limited over 100 bytes")
    harness.clock.advance(0.1)
    client.feed(line)
    assert client.lines() == ["OK ping " + "x" * 993]


def test_the_byte_budget_must_hold_a_whole_line():
    """A burst smaller than CHATD_LINE_LIMIT + 2 would refuse every long line: refused at start."""
    with pytest.raises(ConfigError, match="CHATD_BYTE_RATE"):
        Config(line_limit=4096, byte_rate=RateLimit(10.0, 4097))
    assert Config(line_limit=4096, byte_rate=RateLimit(10.0, 4098)).byte_rate.burst == 4098
    assert Config.from_environ({"CHATD_BYTE_RATE": "8K/1M"}).byte_rate == RateLimit(8192.0, 1 << 20)
    assert Config.from_environ({"CHATD_BYTE_RATE": "off"}).byte_rate is None
    with pytest.raises(ConfigError, match="CHATD_BYTE_RATE"):
        Config.from_environ({"CHATD_BYTE_RATE": "fast"})


@pytest.mark.parametrize("bytewise", [False, True])
def test_a_burst_behind_commits_is_answered_line_by_line_before_bye(bytewise):
    """150 lines while commits wait: OK for each stored line, ERR for each dropped, then BYE.

    Before the fix the BYE flood went out as soon as the 91st line was read,
    ahead of the replies still waiting on their commits: 32 OK, no ERR, BYE,
    and 40 lines stored.
    """
    database = SlowDatabase()
    harness = limited(rate_limit=RateLimit(10.0, 40), flood_limit=50)
    harness = ChatHarness(harness.config, database=database)
    bob = harness.logged_in("bob")
    alice = harness.logged_in("alice")
    bob.lines()
    database.holding = True
    data = b"".join(f"line {n}\n".encode() for n in range(150))
    alice.feed(data, bytewise=bytewise)
    for _ in range(20):
        harness.commit_held()
    replies = [line for line in alice.lines() if not line.startswith("MSG ")]
    accepted = [line for line in replies if line.startswith("OK ")]
    # /register and /login took two tokens of the burst of forty.
    assert replies == ["OK say #lobby"] * 38 + [LIMITED] * 50 + ["BYE flood"]
    seen = [line for line in bob.lines() if line.startswith("MSG ")]
    assert seen == [f"MSG #lobby alice line {n}" for n in range(len(accepted))]
    stored = database.connection.execute("SELECT count(*) FROM room_messages").fetchone()[0]
    assert stored == len(accepted)
    assert alice.transport.closed


@pytest.fixture
def server(tmp_path):
    """A real server (threads, SQLite file, loopback) with the shipped rate limit."""
    server, port = pytest_twisted.blockon(
        start_server(tmp_path, rate_limit=RateLimit(10.0, 40), flood_limit=50)
    )
    server.port = port
    yield server
    pytest_twisted.blockon(server.stopService())


@pytest_twisted.inlineCallbacks
def test_a_150_line_burst_on_a_real_server_is_answered_in_order(server):
    """The issue's burst over TCP: every line OK or ERR in order until BYE; OKs = stored lines."""
    alice, bob = yield defer.gatherResults([connect(server.port) for _ in range(2)])
    yield bob.login("bob")
    yield alice.login("alice")
    alice.transport.write(b"".join(f"burst {n}\n".encode() for n in range(150)))
    yield alice.closed
    replies = [line for line in alice.lines if line.startswith(("OK say", "ERR", "BYE"))]
    assert replies[-1] == "BYE flood", replies
    answers = replies[:-1]
    accepted = [line for line in answers if line.startswith("OK")]
    refused = [line for line in answers if line.startswith("ERR")]
    # OKs first, then the ERRs: nothing is dropped and then accepted again within a burst.
    assert answers == accepted + refused
    assert 38 <= len(accepted) < 150 and refused and set(refused) == {LIMITED}
    bob_seen = yield bob.command(f"/history #lobby {len(accepted) + 10}")
    history = [line.split(" ", 4)[4] for line in bob_seen if line.startswith("HISTORY")]
    assert history == [f"burst {n}" for n in range(len(accepted))]


@pytest_twisted.inlineCallbacks
def test_empty_line_floods_before_login_are_cut_and_others_are_answered(server):
    """Eight connections sending 65,536 LFs before login are cut off; a ninth is answered."""
    flooders = yield defer.gatherResults([connect(server.port) for _ in range(8)])
    quiet = yield connect(server.port)
    for flooder in flooders:
        flooder.transport.write(b"\n" * 65536)
    for flooder in flooders:
        yield flooder.closed
        assert flooder.lines[1:] == ["BYE flood"]
    lines = yield quiet.command("/ping still-here")
    assert lines == ["OK ping still-here"]
