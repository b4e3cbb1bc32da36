"""Slow readers: the bounded per-session output queue (CHATD_SEND_QUEUE_SOFT / _LIMIT).

The harness's transport plays the socket: the protocol's ``SendQueue`` is
registered with it as a streaming producer, and a test pauses it the way a
real transport does when its buffer is full (``transport.producer
.pauseProducing()``) and resumes it when the client catches up.
"""

import pytest
from twisted.logger import globalLogPublisher

from chatd.config import Config, ConfigError
from chatd.core.bulk import PAGE_LINES
from chatd.core.interfaces import DisconnectReason
from tests.support import ChatHarness, Client, LineTransport


def harness_with(**settings) -> ChatHarness:
    """A harness with small queue limits so the edges are a few lines away."""
    settings.setdefault("send_queue_soft", 1024)
    settings.setdefault("send_queue_limit", 4096)
    return ChatHarness(Config(bcrypt_rounds=4, rate_limit=None, **settings))


def stall(client) -> None:
    """The client stops reading: its transport pauses the session's output."""
    client.transport.producer.pauseProducing()


def catch_up(client) -> None:
    """The client reads again: the transport resumes the session's output."""
    client.transport.producer.resumeProducing()


def fill_to(slow, sender, target: int) -> None:
    """Have ``sender`` say lines until exactly ``target`` bytes wait for ``slow``."""
    overhead = len(b"MSG #lobby  \r\n") + len(sender.protocol.session.name)
    while slow.protocol.output.queued + 2 * (overhead + 100) <= target:
        sender.send("y" * 100)
    sender.send("z" * (target - slow.protocol.output.queued - overhead))
    assert slow.protocol.output.queued == target


def test_the_queue_is_the_transports_producer():
    """Every connection registers its output queue as a streaming producer."""
    client = harness_with().client()
    assert client.transport.producer is client.protocol.output
    assert client.transport.streaming is True


def test_output_waits_while_paused_and_goes_out_in_order():
    """Paused: nothing reaches the transport; resumed: all of it, in order."""
    harness = harness_with()
    alice, bob = harness.logged_in("alice"), harness.logged_in("bob")
    alice.lines()
    stall(alice)
    for number in range(5):
        bob.send(f"line {number}")
    assert alice.lines() == []
    assert alice.protocol.output.queued == 5 * len(b"MSG #lobby bob line 0\r\n")
    catch_up(alice)
    assert alice.lines() == [f"MSG #lobby bob line {n}" for n in range(5)]
    assert alice.protocol.output.queued == 0


def test_a_broadcast_waits_once_for_many_slow_sessions():
    """Queued events are the event's shared bytes, not a copy per session."""
    harness = harness_with()
    slow = [harness.logged_in(f"user{n}") for n in range(3)]
    bob = harness.logged_in("bob")
    for client in slow:
        stall(client)
    bob.send("the same bytes for everyone")
    waiting = [client.protocol.output._waiting[-1] for client in slow]
    assert waiting[0] == b"MSG #lobby bob the same bytes for everyone\r\n"
    assert all(data is waiting[0] for data in waiting)


def test_past_the_soft_limit_the_session_stops_being_read():
    """Over 1024 bytes waiting: the client's own lines wait too, until its output drains."""
    harness = harness_with()
    alice, bob = harness.logged_in("alice"), harness.logged_in("bob")
    stall(alice)
    line = "x" * 90
    while alice.protocol.output.queued <= 1024:
        assert alice.transport.producerState == "producing"
        bob.send(line)
    assert alice.protocol.output.slow
    assert alice.transport.producerState == "paused"
    catch_up(alice)
    assert alice.transport.producerState == "producing"
    assert not alice.protocol.output.slow


def test_at_the_hard_limit_the_session_stays():
    """Exactly CHATD_SEND_QUEUE_LIMIT bytes waiting is still allowed."""
    harness = harness_with()
    alice, bob = harness.logged_in("alice"), harness.logged_in("bob")
    stall(alice)
    fill_to(alice, bob, 4096)
    harness.clock.advance(0)
    assert not alice.transport.closed


def test_one_byte_past_the_hard_limit_drops_the_session_and_logs_it():
    """4097 bytes waiting: the connection is aborted and the server logs it."""
    harness = harness_with()
    alice, bob, carol = (harness.logged_in(name) for name in ("alice", "bob", "carol"))
    carol.lines()
    stall(alice)
    fill_to(alice, bob, 4000)
    logged = []
    globalLogPublisher.addObserver(logged.append)
    try:
        # 4000 + 17 bytes of MSG and CRLF + 80 = 4097: one past the limit.
        answer = bob.send("z" * 80)
    finally:
        globalLogPublisher.removeObserver(logged.append)
    # Aborted after the broadcast that overflowed it, in the same reactor turn.
    assert alice.protocol.output.queued == 0
    assert alice.transport.closed
    dropped = [event for event in logged if event.get("reason") == "slow-reader"]
    assert len(dropped) == 1
    assert dropped[0]["user"] == "alice" and dropped[0]["limit_bytes"] == 4096
    # Everyone else got every message, the one that overflowed alice included.
    said = [line for line in carol.lines() if line.startswith("MSG")]
    assert said[-1] == "MSG #lobby bob " + "z" * 80
    assert sum(len(line) + 2 for line in said) == 4000 + 97
    assert answer[-2:] == ["OK say #lobby", "PART #lobby alice"]
    assert bob.send("/who") == ["WHO #lobby bob carol", "OK who #lobby"]


class SmallBufferTransport(LineTransport):
    """A transport that, like Twisted's, pauses its producer once it holds ``capacity`` bytes.

    ``drain`` plays the kernel taking the bytes: the buffer empties and the
    producer is resumed.
    """

    capacity = 2048

    def __init__(self) -> None:
        super().__init__()
        self.held = 0

    def write(self, data: bytes) -> None:
        """Buffer ``data``; pause the producer past the capacity."""
        super().write(data)
        self.held += len(data)
        if self.held > self.capacity and self.producer is not None:
            self.producer.pauseProducing()

    def drain(self) -> None:
        """The buffer went to the kernel: resume the producer."""
        self.held = 0
        if self.producer is not None:
            self.producer.resumeProducing()


def test_history_is_paced_by_the_reader_and_never_counts_as_slow():
    """/history of 60 lines: written as the transport drains, never queued, OK last."""
    harness = harness_with()
    alice = Client(harness, transport=SmallBufferTransport())
    alice.login("alice")
    for number in range(60):
        alice.send(f"message number {number} with some padding to make it longer")
        alice.transport.drain()
    alice.lines()
    # 60 lines of about 100 bytes: past both limits (1024 and 4096) if queued.
    batches = [alice.send("/history #lobby 60")]
    while not (batches[-1] and batches[-1][-1].startswith("OK ")):
        assert alice.protocol.output.queued == 0
        assert not alice.protocol.output.slow and not alice.transport.closed
        alice.transport.drain()
        batches.append(alice.lines())
        assert len(batches) < 10, batches
    lines = [line for batch in batches for line in batch]
    assert lines[-1] == "OK history #lobby"
    texts = [line.split(" ", 4)[4] for line in lines[:-1]]
    assert texts == [f"message number {n} with some padding to make it longer" for n in range(60)]
    # A page at a time: the first batch is one page, the reply needed two.
    assert len(batches[0]) == PAGE_LINES and len(batches) == 2


def test_live_lines_wait_behind_a_bulk_reply_and_count():
    """A room message for a session whose /history is still going comes after it, counted."""
    harness = harness_with()
    alice, bob = harness.logged_in("alice"), harness.logged_in("bob")
    for number in range(60):
        alice.send(f"line {number}")
    alice.lines()
    stall(alice)
    alice.send("/history #lobby 60")
    alice.lines()
    bob.send("said meanwhile")
    assert alice.protocol.output.queued == len(b"MSG #lobby bob said meanwhile\r\n")
    catch_up(alice)
    lines = alice.lines()
    assert lines[-2:] == ["MSG #lobby bob said meanwhile", "OK history #lobby"]
    assert alice.protocol.output.queued == 0


def test_the_hard_limit_still_holds_behind_a_bulk_reply():
    """Ordinary traffic that piles up behind a bulk reply still drops a client that never reads."""
    harness = harness_with()
    alice, bob = harness.logged_in("alice"), harness.logged_in("bob")
    for number in range(60):
        alice.send(f"line {number}")
    stall(alice)
    alice.send("/history #lobby 60")
    while not alice.transport.closed:
        bob.send("x" * 200)
        assert alice.protocol.output.queued <= 4096
    assert bob.send("/who") == ["WHO #lobby bob", "OK who #lobby"]


class LingeringTransport(LineTransport):
    """A transport whose loseConnection waits for a flush that never comes."""

    def loseConnection(self) -> None:
        """Remember the request; only an abort really closes."""
        self.disconnecting = True

    def abortConnection(self) -> None:
        """Close now."""
        LineTransport.loseConnection(self)


def test_a_bye_to_a_client_that_never_reads_is_cut_off_after_the_close_timeout():
    """CHATD_CLOSE_TIMEOUT (10 s): the BYE is flushed to the transport, then an abort."""
    harness = harness_with()
    client = Client(harness, transport=LingeringTransport())
    client.login("alice")
    stall(client)
    client.protocol.disconnect(DisconnectReason.SHUTDOWN)
    # Flushed: the queue handed everything over and stopped being the producer.
    assert client.lines() == ["BYE shutdown"]
    assert client.transport.producer is None
    harness.clock.advance(9.9)
    assert not client.transport.closed
    harness.clock.advance(0.1)
    assert client.transport.closed


def test_the_soft_limit_may_not_exceed_the_hard_one():
    """A soft limit above the hard one is refused at start."""
    with pytest.raises(ConfigError, match="CHATD_SEND_QUEUE_SOFT"):
        Config.from_environ({"CHATD_SEND_QUEUE_SOFT": "2M", "CHATD_SEND_QUEUE_LIMIT": "1M"})
    config = Config.from_environ({"CHATD_SEND_QUEUE_SOFT": "16k", "CHATD_SEND_QUEUE_LIMIT": "2MiB"})
    assert (config.send_queue_soft, config.send_queue_limit) == (16384, 2 << 20)
