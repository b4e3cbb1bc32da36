"""Stored messages and bulk replies, paced by the reader; isolated deliveries.

Units over ``StringTransport`` and ``task.Clock``: ``AckingTransport``
plays both Twisted's buffer (it pauses its producer when full, ``drain``
resumes it) and the client's TCP (bytes count as unacknowledged until
``acknowledge``), so a test decides exactly what has been handed over.
The real-socket versions are in ``tests/test_delivery_e2e.py``.
"""

import pytest
from twisted.internet import defer, task
from twisted.logger import globalLogPublisher

from chatd.config import Config, ConfigError
from chatd.core.bulk import PAGE_LINES, BulkReply, EventPages, Page, PageSource
from chatd.core.events import Notice
from chatd.frontends.limits import SendQueue
from chatd.frontends.line.render import encode
from chatd.storage import transactions
from tests.support import ChatHarness, Client, LineTransport, RecordingClient, SlowDatabase


def line_door_lines(event):
    """The line door's lines of ``event``, as a ``BulkReply`` takes its door's encoder."""
    return [encode(event)]


class AckingTransport(LineTransport):
    """A transport with a small buffer, whose bytes the client acknowledges when told."""

    capacity = 2048

    def __init__(self) -> None:
        super().__init__()
        self.held = 0
        self.unacknowledged = 0

    @property
    def dataBuffer(self) -> bytes:
        """What ``chatd.frontends.limits.unsent_bytes`` reads: bytes not acknowledged yet."""
        return b"\0" * self.unacknowledged

    def write(self, data: bytes) -> None:
        """Buffer ``data``; pause the producer past the capacity."""
        super().write(data)
        self.held += len(data)
        self.unacknowledged += len(data)
        if self.held > self.capacity and self.producer is not None:
            self.producer.pauseProducing()

    def drain(self) -> None:
        """The buffer went to the kernel (not yet acknowledged): resume the producer."""
        self.held = 0
        if self.producer is not None:
            self.producer.resumeProducing()

    def acknowledge(self) -> None:
        """The client's TCP acknowledged everything written so far."""
        self.unacknowledged = 0


def stored_count(harness: ChatHarness, name: str) -> int:
    """How many direct messages wait for ``name``."""
    return transactions.count_stored_messages(harness.database.connection, name)


def fill_mailbox(harness: ChatHarness, count: int, name: str = "bob") -> list[str]:
    """alice sends ``count`` DMs to offline ``name``; return their texts."""
    harness.client().send(f"/register {name} password1")
    alice = harness.logged_in("alice")
    texts = [f"stored {number:04d} " + "p" * 80 for number in range(count)]
    for text in texts:
        assert alice.send(f"/msg {name} {text}")[-1] == f"OK msg {name} stored"
    return texts


def acking_client(harness: ChatHarness) -> Client:
    client = Client(harness, transport=AckingTransport())
    client.lines()
    return client


def stored_texts(lines: list[str]) -> list[str]:
    """The texts of the STORED lines among ``lines``."""
    return [line.split(" ", 3)[3] for line in lines if line.startswith("STORED ")]


# --- the send queue -----------------------------------------------------------


class ListPages(PageSource):
    """Pages of INFO lines from a list, each asking to hear of its hand-over."""

    def __init__(self, pages: list[list[str]]) -> None:
        self.pages = list(pages)
        self.outcomes: list[bool] = []
        self.abandoned_called = False

    def next_page(self) -> Page | None:
        if not self.pages:
            return None
        return Page([Notice(text) for text in self.pages.pop(0)], self.outcomes.append)

    def abandoned(self) -> None:
        self.abandoned_called = True


def make_queue(unsent: list[int]) -> tuple[SendQueue, LineTransport, task.Clock]:
    transport = LineTransport()
    clock = task.Clock()
    queue = SendQueue(
        transport, 100, 200, lambda: None, lambda: None, lambda: None,
        clock=clock, unsent=lambda _transport: unsent[0],
    )
    return queue, transport, clock


def test_a_bulk_reply_is_pulled_only_while_the_transport_has_room():
    """Paused: no page is taken; resumed: one page per resume once the transport pauses again."""
    queue, transport, _clock = make_queue([0])
    queue.pauseProducing()
    bulk = BulkReply(ListPages([["a1", "a2"], ["b1"]]), line_door_lines)
    queue.add_bulk(bulk)
    assert transport.value() == b"" and queue.queued == 0
    # Resume: the queue writes page one; the "transport" pauses it again after it.
    original = transport.write

    def write_then_pause(data: bytes) -> None:
        original(data)
        queue.pauseProducing()

    transport.write = write_then_pause
    queue.resumeProducing()
    assert transport.value() == b"INFO a1\r\nINFO a2\r\n"
    assert not bulk.done.called
    queue.resumeProducing()
    assert transport.value().endswith(b"INFO b1\r\n")
    queue.resumeProducing()
    assert bulk.done.called


def test_lines_written_behind_a_bulk_reply_wait_and_count():
    """A write while a bulk reply is unfinished waits behind it and counts against the limits."""
    queue, transport, _clock = make_queue([0])
    fetches: list[defer.Deferred] = []
    pages = ListPages([])
    # Every page takes a while to fetch: it comes when the test fires its Deferred.
    pages.next_page = lambda: fetches.append(defer.Deferred()) or fetches[-1]
    queue.add_bulk(BulkReply(pages, line_door_lines))
    queue.write(b"LIVE\r\n")
    assert transport.value() == b"" and queue.queued == 6
    fetches[0].callback(Page([Notice("a1")]))
    assert transport.value() == b"INFO a1\r\n" and queue.queued == 6
    fetches[1].callback(None)  # No more pages.
    assert transport.value() == b"INFO a1\r\nLIVE\r\n" and queue.queued == 0


def test_a_page_is_handed_over_once_the_client_acknowledged_it():
    """The hand-over callback waits for the unacknowledged bytes to go, polled on the clock."""
    unsent = [0]
    queue, transport, clock = make_queue(unsent)
    pages = ListPages([["a1"], ["b1"]])

    def write_unacknowledged(data: bytes) -> None:
        LineTransport.write(transport, data)
        unsent[0] += len(data)

    transport.write = write_unacknowledged
    queue.add_bulk(BulkReply(pages, line_door_lines))
    assert transport.value() == b"INFO a1\r\nINFO b1\r\n"
    assert pages.outcomes == []
    unsent[0] = len(b"INFO b1\r\n")  # The first page arrived, the second not yet.
    clock.advance(0.05)
    assert pages.outcomes == [True]
    unsent[0] = 0
    queue.check_handed_over()
    assert pages.outcomes == [True, True]
    assert not clock.getDelayedCalls()


def test_pages_not_yet_handed_over_are_abandoned_when_the_connection_goes():
    """stopProducing: pages written but unacknowledged are reported as not handed over."""
    queue, _transport, clock = make_queue([10_000])
    pages = ListPages([["a1"]])
    queue.add_bulk(BulkReply(pages, line_door_lines))
    assert pages.outcomes == []
    queue.stopProducing()
    assert pages.outcomes == [False]
    assert not clock.getDelayedCalls()


def test_a_bulk_reply_waiting_when_the_connection_goes_is_cancelled():
    """A paused queue that stops: the reply's done fires, its source hears it was abandoned."""
    queue, _transport, _clock = make_queue([0])
    queue.pauseProducing()
    pages = ListPages([["a1"]])
    bulk = BulkReply(pages, line_door_lines)
    queue.add_bulk(bulk)
    queue.stopProducing()
    assert bulk.done.called and pages.abandoned_called


def test_event_pages_page_a_list():
    """EventPages hands out PAGE_LINES events at a time, then None."""
    events = [Notice(str(n)) for n in range(PAGE_LINES + 1)]
    pages = EventPages(events)
    assert len(pages.next_page().events) == PAGE_LINES
    assert [e.text for e in pages.next_page().events] == [str(PAGE_LINES)]
    assert pages.next_page() is None


# --- stored messages: item 1 and 2 ---------------------------------------------


def test_stored_messages_leave_the_store_only_once_handed_over():
    """120 stored DMs: deleted page by page as the client acknowledges, never before."""
    harness = ChatHarness()
    texts = fill_mailbox(harness, 120)
    bob = acking_client(harness)
    lines = bob.send("/login bob password1")
    # One page went to the transport, which is full now.
    assert stored_texts(lines) == texts[:PAGE_LINES]
    assert stored_count(harness, "bob") == 120
    bob.transport.drain()  # In the kernel, not acknowledged: still stored.
    harness.clock.advance(0.05)
    assert stored_texts(bob.lines()) == texts[PAGE_LINES : 2 * PAGE_LINES]
    assert stored_count(harness, "bob") == 120
    bob.transport.acknowledge()
    harness.clock.advance(0.05)
    assert stored_count(harness, "bob") == 120 - 2 * PAGE_LINES
    bob.transport.drain()
    rest = bob.lines()
    assert stored_texts(rest) == texts[2 * PAGE_LINES :]
    bob.transport.drain()
    assert bob.lines() == ["OK login bob"]
    bob.transport.acknowledge()
    bob.send("/ping")  # Any line from the client checks what arrived.
    assert stored_count(harness, "bob") == 0


def test_a_client_that_drops_mid_delivery_gets_the_rest_at_its_next_login():
    """Reset after two pages, the second unacknowledged: the next login starts at the second."""
    harness = ChatHarness()
    texts = fill_mailbox(harness, 120)
    bob = acking_client(harness)
    first = stored_texts(bob.send("/login bob password1"))
    bob.transport.acknowledge()
    bob.transport.drain()
    first += stored_texts(bob.lines())
    harness.clock.advance(0.05)
    bob.close()
    assert first == texts[: 2 * PAGE_LINES]
    assert stored_count(harness, "bob") == 120 - PAGE_LINES
    again = harness.client()
    lines = again.send("/login bob password1")
    second = stored_texts(lines)
    assert second == texts[PAGE_LINES:]
    # The repeat is what was in flight, as the very same lines (same timestamps).
    shown_twice = set(first) & set(second)
    assert len(shown_twice) == PAGE_LINES
    assert stored_count(harness, "bob") == 0


def test_a_further_session_does_not_show_the_mailbox_a_second_time():
    """While one session takes the mailbox, another login of the user gets no STORED."""
    harness = ChatHarness()
    texts = fill_mailbox(harness, 60)
    bob = acking_client(harness)
    bob.send("/login bob password1")
    other = harness.client()
    assert stored_texts(other.send("/login bob password1")) == []
    bob.transport.acknowledge()
    bob.transport.drain()
    assert stored_texts(bob.lines()) == texts[PAGE_LINES:]
    bob.transport.acknowledge()
    harness.clock.advance(0.05)
    assert stored_count(harness, "bob") == 0


# --- the mailbox limit -----------------------------------------------------------


def test_the_mailbox_limit_at_and_past_its_edge():
    """CHATD_MAILBOX_LIMIT=3: the third DM is stored, the fourth is ERR mailbox-full."""
    harness = ChatHarness(Config(bcrypt_rounds=4, rate_limit=None, mailbox_limit=3))
    harness.client().send("/register bob password1")
    alice = harness.logged_in("alice")
    for number in range(3):
        assert alice.send(f"/msg bob m{number}")[-1] == "OK msg bob stored"
    refused = alice.send("/msg bob one too many")
    assert refused == [
        "ERR mailbox-full 3 messages already wait for bob; try again once they have logged in"
    ]
    assert stored_count(harness, "bob") == 3
    # Online, bob gets DMs whatever his mailbox holds.
    bob = harness.logged_in("bob")
    assert alice.send("/msg bob live")[-1] == "OK msg bob delivered"
    bob.close()
    assert alice.send("/msg bob room again")[-1] == "OK msg bob stored"


def test_the_mailbox_limit_holds_for_messages_committed_together():
    """Ten DMs from ten senders in one commit batch, limit 4: four stored, six refused."""
    database = SlowDatabase()
    harness = ChatHarness(
        Config(bcrypt_rounds=4, rate_limit=None, mailbox_limit=4), database=database
    )
    harness.client().send("/register bob password1")
    senders = [harness.logged_in(f"sender{n}") for n in range(10)]
    database.holding = True
    for sender in senders:
        sender.send("/msg bob hello")
    harness.commit_held()
    answers = [sender.lines()[-1] for sender in senders]
    assert answers.count("OK msg bob stored") == 4
    assert sum(answer.startswith("ERR mailbox-full ") for answer in answers) == 6
    assert stored_count(harness, "bob") == 4


def test_the_mailbox_limit_setting():
    """CHATD_MAILBOX_LIMIT: 1000 by default, 1 to 1000000."""
    assert Config().mailbox_limit == 1000
    assert Config.from_environ({"CHATD_MAILBOX_LIMIT": "1"}).mailbox_limit == 1
    assert Config.from_environ({"CHATD_MAILBOX_LIMIT": "1000000"}).mailbox_limit == 1_000_000
    for bad in ("0", "1000001", "lots"):
        with pytest.raises(ConfigError, match="CHATD_MAILBOX_LIMIT"):
            Config.from_environ({"CHATD_MAILBOX_LIMIT": bad})


# --- item 7: one failing mind affects nobody else ----------------------------------


class BrokenClient(RecordingClient):
    """A mind whose deliver raises, as a buggy door or protocol might."""

    def deliver(self, event) -> None:
        """Fail."""
        raise RuntimeError("this mind is broken")


def start(harness: ChatHarness, name: str, mind) -> object:
    harness.accounts.register(name, "password1").addErrback(lambda failure: None)
    sessions = []
    harness.chat.start_session(name, mind).addCallback(sessions.append)
    return sessions[0]


def capture_failures():
    logged = []
    globalLogPublisher.addObserver(logged.append)
    return logged, lambda: globalLogPublisher.removeObserver(logged.append)


def test_a_failing_mind_does_not_wedge_the_posts_of_its_reactor_turn():
    """Two posts flushed in one turn to a room with a broken member: both answered, all see."""
    harness = ChatHarness(database=SlowDatabase())
    carol_mind = RecordingClient()
    carol = start(harness, "carol", carol_mind)
    alice = start(harness, "alice", RecordingClient())
    broken_mind = RecordingClient()
    start(harness, "broken", broken_mind)
    bob_mind = RecordingClient()
    bob = start(harness, "bob", bob_mind)
    broken_mind.__class__ = BrokenClient
    bob_mind.events.clear()
    logged, stop = capture_failures()
    try:
        harness.database.holding = True
        answered = []
        for post in (alice.say("one"), carol.say("two")):
            post.addCallback(answered.append)
        harness.database.flush()
        harness.end_turn()
        harness.end_turn()
    finally:
        stop()
    assert answered == ["#lobby", "#lobby"]
    assert bob_mind.lines() == ["MSG #lobby alice one\r\nMSG #lobby carol two"]
    assert broken_mind.closed_with == "server-error"
    failures = [event for event in logged if "log_failure" in event]
    assert len(failures) == 1 and failures[0]["user"] == "broken"
    # The others chat on.
    harness.database.holding = False
    still_here = bob.say("still here")
    harness.end_turn()
    assert still_here.called
    assert carol_mind.lines()[-1] == "MSG #lobby bob still here"


def test_a_failing_session_of_a_user_does_not_stop_a_direct_message():
    """A DM to a user whose first session's mind fails still reaches the second session."""
    harness = ChatHarness()
    broken_mind = RecordingClient()
    start(harness, "bob", broken_mind)
    bob_mind = RecordingClient()
    start(harness, "bob", bob_mind)
    broken_mind.__class__ = BrokenClient
    alice = start(harness, "alice", RecordingClient())
    bob_mind.events.clear()
    _logged, stop = capture_failures()
    try:
        sent = alice.message("bob", "hello")
        harness.end_turn()
    finally:
        stop()
    assert sent.result == ("bob", "delivered")
    assert bob_mind.lines() == ["DM alice bob hello"]
    assert broken_mind.closed_with == "server-error"


def test_a_mind_that_cannot_even_be_disconnected_is_logged_out():
    """If disconnecting the failed mind raises too, the session is still ended."""
    harness = ChatHarness()
    start(harness, "alice", RecordingClient())
    broken_mind = RecordingClient()
    start(harness, "broken", broken_mind)

    class Unclosable(BrokenClient):
        def disconnect(self, reason: str) -> None:
            raise RuntimeError("cannot close either")

    broken_mind.__class__ = Unclosable
    _logged, stop = capture_failures()
    try:
        harness.chat.rooms["#lobby"].broadcast(Notice("hello"))
        harness.end_turn()
    finally:
        stop()
    assert "broken" not in harness.chat.users
    assert list(harness.chat.rooms["#lobby"].members) == ["alice"]
