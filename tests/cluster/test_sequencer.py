"""RoomSequencer: a room's messages exactly once each, in sequence order, gaps filled.

Announcements are dropped, repeated and reordered on purpose; the database
is a fake holding the committed rows; time is a ``task.Clock``.
"""

import random
from dataclasses import dataclass

from twisted.internet import defer, task

from chatd.cluster.sequencer import FILL_RETRY_SECONDS, GAP_HOLD_SECONDS, RoomSequencer


@dataclass(frozen=True)
class Message:
    """A stand-in room message: its number and a text."""

    seq: int
    text: str = ""


class FakeRoom:
    """The committed rows of one room, and what its members were shown."""

    def __init__(self, committed: int = 0, last_seq: int = 0, batch: int = 500) -> None:
        self.rows = {seq: Message(seq, f"m{seq}") for seq in range(1, committed + 1)}
        self.shown: list[int] = []
        self.waiters: list[tuple[int, defer.Deferred | None]] = []
        self.reads: list[tuple[int, int | None, int]] = []
        self.failing = False
        self.held_reads: list[defer.Deferred] | None = None
        self.clock = task.Clock()
        self.sequencer = RoomSequencer(last_seq, self.deliver, self.fill, self.clock, batch=batch)

    def commit(self, count: int = 1) -> list[Message]:
        """Commit ``count`` more messages; return them."""
        start = len(self.rows) + 1
        made = [Message(seq, f"m{seq}") for seq in range(start, start + count)]
        self.rows.update((message.seq, message) for message in made)
        return made

    def deliver(self, message: Message, waiter: defer.Deferred | None) -> None:
        self.shown.append(message.seq)
        self.waiters.append((message.seq, waiter))

    def fill(self, first: int, last: int | None, limit: int) -> defer.Deferred:
        self.reads.append((first, last, limit))
        if self.failing:
            return defer.fail(ConnectionError("database away"))
        top = max(self.rows, default=0) if last is None else last
        found = [self.rows[seq] for seq in range(first, top + 1) if seq in self.rows][:limit]
        if self.held_reads is not None:
            reading: defer.Deferred = defer.Deferred()
            self.held_reads.append(reading)
            reading.addCallback(lambda _: found)
            return reading
        return defer.succeed(found)


def test_in_order_announcements_are_delivered_at_once_without_reads():
    """The common case: each next number is delivered on arrival; the database is not read."""
    room = FakeRoom()
    for message in room.commit(5):
        room.sequencer.offer(message)
    assert room.shown == [1, 2, 3, 4, 5]
    assert room.reads == []
    assert room.clock.getDelayedCalls() == []


def test_a_duplicate_is_never_delivered_twice():
    """The same announcement twice, or an old one late, is ignored."""
    room = FakeRoom()
    first, second = room.commit(2)
    for message in (first, first, second, first, second):
        room.sequencer.offer(message)
    assert room.shown == [1, 2]


def test_a_reordered_announcement_is_held_back_and_put_in_place():
    """3 before 2: 3 waits; 2 arrives within the hold; no database read."""
    room = FakeRoom()
    one, two, three = room.commit(3)
    room.sequencer.offer(one)
    room.sequencer.offer(three)
    assert room.shown == [1]
    assert room.sequencer.held == 1
    room.clock.advance(GAP_HOLD_SECONDS / 2)
    room.sequencer.offer(two)
    assert room.shown == [1, 2, 3]
    room.clock.advance(GAP_HOLD_SECONDS)
    assert room.reads == []


def test_a_dropped_announcement_is_filled_from_the_database_after_the_hold():
    """2 never comes: after the hold the database gives it, then 3 follows."""
    room = FakeRoom()
    one, _two, three = room.commit(3)
    room.sequencer.offer(one)
    room.sequencer.offer(three)
    room.clock.advance(GAP_HOLD_SECONDS - 0.001)
    assert room.reads == [] and room.shown == [1]
    room.clock.advance(0.001)
    assert room.reads == [(2, 3, 500)]
    assert room.shown == [1, 2, 3]
    assert room.sequencer.filled == 1


def test_a_message_deleted_after_its_commit_is_skipped_not_waited_for():
    """Retention took 2 before it was read back: 3 goes on, and nothing waits any more."""
    room = FakeRoom()
    one, two, three = room.commit(3)
    del room.rows[two.seq]
    room.sequencer.offer(one)
    room.sequencer.offer(three)
    room.clock.advance(GAP_HOLD_SECONDS)
    assert room.shown == [1, 3]
    assert room.clock.getDelayedCalls() == []


def test_a_local_commit_waits_for_the_one_before_it_then_answers():
    """This node committed 2 while 1 (another node's) has not arrived: 2 waits, with its post."""
    room = FakeRoom()
    one, two = room.commit(2)
    post: defer.Deferred = defer.Deferred()
    assert room.sequencer.committed(two, post) is True
    assert room.shown == []
    room.sequencer.offer(one)
    assert room.waiters == [(1, None), (2, post)]


def test_a_local_commit_read_back_first_is_not_delivered_again():
    """A fill read the node's own message before its commit was reported: False, no repeat."""
    room = FakeRoom()
    _one, two, three = room.commit(3)
    room.sequencer.offer(three)
    room.clock.advance(GAP_HOLD_SECONDS)
    assert room.shown == [1, 2, 3]
    assert room.sequencer.committed(two, defer.Deferred()) is False
    assert room.shown == [1, 2, 3]


def test_learning_of_a_commit_with_nothing_held_fills_it():
    """Told only that 4 exists (a room loaded late): 1 to 4 are read and delivered."""
    room = FakeRoom(committed=4)
    room.sequencer.learn(4)
    room.clock.advance(GAP_HOLD_SECONDS)
    assert room.reads == [(1, 4, 500)]
    assert room.shown == [1, 2, 3, 4]


def test_resync_reads_everything_after_the_last_delivered():
    """After a Redis reconnect: every message committed meanwhile, in one open-ended read."""
    room = FakeRoom(committed=2, last_seq=2)
    room.commit(3)
    room.sequencer.resync()
    assert room.reads == [(3, None, 500)]
    assert room.shown == [3, 4, 5]
    room.sequencer.resync()
    assert room.shown == [3, 4, 5]


def test_a_long_gap_is_read_in_batches():
    """A gap of 7 with batches of 3 takes three reads, in order."""
    room = FakeRoom(batch=3)
    messages = room.commit(8)
    room.sequencer.offer(messages[-1])
    room.clock.advance(GAP_HOLD_SECONDS)
    assert room.shown == list(range(1, 9))
    assert [read[0] for read in room.reads] == [1, 4, 7]


def test_a_failed_fill_is_tried_again_later():
    """The database is away: the gap waits, and the read is tried again after a second."""
    room = FakeRoom()
    _one, two = room.commit(2)
    room.failing = True
    room.sequencer.offer(two)
    room.clock.advance(GAP_HOLD_SECONDS)
    assert room.shown == []
    room.failing = False
    room.clock.advance(FILL_RETRY_SECONDS)
    assert room.shown == [1, 2]


def test_a_failed_resync_is_tried_again_as_a_resync():
    """No gap is known after a reconnect, so a failed resync must try again by itself."""
    room = FakeRoom()
    room.commit(2)
    room.failing = True
    room.sequencer.resync()
    room.failing = False
    room.clock.advance(FILL_RETRY_SECONDS)
    assert room.shown == [1, 2]


def test_a_resync_asked_during_a_fill_follows_it():
    """A reconnect while a gap fill reads: the open-ended read comes after it."""
    room = FakeRoom()
    _one, two = room.commit(2)
    room.held_reads = []
    room.sequencer.offer(two)
    room.clock.advance(GAP_HOLD_SECONDS)
    room.commit(2)
    room.sequencer.resync()
    room.held_reads.pop(0).callback(None)
    assert room.shown == [1, 2]
    room.held_reads.pop(0).callback(None)
    assert room.shown == [1, 2, 3, 4]
    assert room.reads[1] == (3, None, 500)


def test_stop_drops_what_is_held_and_answers_local_posts():
    """The room left memory: held messages go nowhere; a held local post is answered."""
    room = FakeRoom()
    _one, two = room.commit(2)
    post: defer.Deferred = defer.Deferred()
    room.sequencer.committed(two, post)
    room.sequencer.stop()
    assert post.called
    room.clock.advance(GAP_HOLD_SECONDS * 10)
    assert room.shown == [] and room.reads == []


def test_any_mix_of_drops_repeats_and_reorders_delivers_each_once_in_order():
    """Random losses, duplicates and shuffles (seeded): every message once, in order."""
    for seed in range(50):
        chance = random.Random(seed)
        room = FakeRoom()
        messages = room.commit(60)
        arriving = [m for m in messages if chance.random() > 0.3]
        arriving += chance.sample(arriving, k=len(arriving) // 3)
        chance.shuffle(arriving)
        for message in arriving:
            room.sequencer.offer(message)
            if chance.random() < 0.2:
                room.clock.advance(GAP_HOLD_SECONDS / 3)
        room.sequencer.learn(60)
        room.clock.advance(GAP_HOLD_SECONDS)
        assert room.shown == list(range(1, 61)), seed
