"""One room's messages, put back in sequence order on a node of a cluster.

Each room numbers its messages 1, 2, 3, ... in the transaction that commits
them (``rooms.last_seq``), so a room's sequence order is its commit order.
On one node the writer reports commits in that order and the core delivers
them as they come. In a cluster the messages reach a node by several roads
that can each lose, repeat or reorder them: its own commits, the other
nodes' announcements through Redis (at most once, in no order across
publishers, none while Redis is away), and reads of the database.

A ``RoomSequencer`` takes whatever arrives on any road and hands the room's
messages on exactly once each, strictly in sequence order. It remembers the
last sequence number delivered; a message further on is held back, and if
the missing numbers do not turn up within a short hold (a late announcement
from another node usually does) it asks the database for them. PostgreSQL
is the truth: a number below one that was announced or committed is
already committed (the room's row lock orders the commits), so a fill that
does not find it means the message was deleted (retention, ``chatd erase``)
and the sequencer moves past it instead of waiting forever.

It is plain logic on an injected clock and two callables, so the tests
drive it with ``task.Clock`` and fakes that drop, repeat and reorder.
"""

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

log = Logger()

# How long a gap may wait for its late announcement before the database is
# asked. Announcements from different nodes overtake each other by well
# under a millisecond on one network; a short hold saves a read per overtake
# without making the held-back message noticeably late.
GAP_HOLD_SECONDS = 0.02
# After a failed fill (the database away), the next try waits this long.
FILL_RETRY_SECONDS = 1.0
# Rows one fill reads at most; a longer gap takes several reads in turn.
FILL_BATCH = 500


class Sequenced(Protocol):
    """What the sequencer needs of a message: its number in the room."""

    seq: int


# deliver(message, waiter): hand ``message`` on; ``waiter`` (or None) is the
# Deferred of the local post that committed it, to fire once it is shown.
Deliver = Callable[[Any, defer.Deferred | None], None]
# fill(first, last, limit): the room's messages numbered first..last (last
# None: no upper bound), at most ``limit``, in order.
Fill = Callable[[int, int | None, int], defer.Deferred]


class RoomSequencer:
    """Delivers one room's messages exactly once each, in sequence order, filling gaps."""

    def __init__(
        self,
        last_seq: int,
        deliver: Deliver,
        fill: Fill,
        clock,
        hold_seconds: float = GAP_HOLD_SECONDS,
        batch: int = FILL_BATCH,
    ) -> None:
        """Start after ``last_seq``, the last message the room's members were already shown."""
        self.last = last_seq
        # The highest number known to be committed: announced, committed
        # here, or read back. Beyond ``last`` it is a gap to close.
        self.known = last_seq
        self._deliver = deliver
        self._fill = fill
        self._clock = clock
        self._hold_seconds = hold_seconds
        self._batch = batch
        self._held: dict[int, Any] = {}
        self._waiters: dict[int, defer.Deferred] = {}
        self._timer = None
        self._filling = False
        self._resync_wanted = False
        self.stopped = False
        # For metrics and tests: messages read back from the database.
        self.filled = 0
        self.fills = 0

    # --- what arrives ------------------------------------------------------

    def offer(self, message: Sequenced) -> None:
        """A message from any road; one already delivered or held is ignored."""
        if self.stopped or message.seq <= self.last or message.seq in self._held:
            return
        self._held[message.seq] = message
        self.known = max(self.known, message.seq)
        self._drain()

    def committed(self, message: Sequenced, waiter: defer.Deferred) -> bool:
        """A message this node committed; ``waiter`` goes with it to ``deliver``.

        False when it was delivered already (a fill read it back before the
        commit was reported here): the caller answers the post itself.
        """
        if self.stopped or message.seq <= self.last:
            return False
        self._waiters[message.seq] = waiter
        self.offer(message)
        return True

    def learn(self, seq: int) -> None:
        """Message ``seq`` is committed, though it did not come here (yet)."""
        if self.stopped or seq <= self.known:
            return
        self.known = seq
        self._drain()

    def resync(self) -> None:
        """Read whatever was committed after the last delivered message, now.

        After Redis came back, or while it is away: announcements may have
        been lost with nothing after them to show the gap.
        """
        if self.stopped:
            return
        if self._filling:
            # After the read under way, which may have begun before the loss.
            self._resync_wanted = True
            return
        self._cancel_timer()
        self._start_fill(open_ended=True)

    def stop(self) -> None:
        """The room left memory: drop what is held, answer the local posts still held."""
        self.stopped = True
        self._cancel_timer()
        self._held.clear()
        waiters, self._waiters = self._waiters, {}
        for waiter in waiters.values():
            waiter.callback(None)

    @property
    def held(self) -> int:
        """Messages waiting for an earlier one."""
        return len(self._held)

    # --- delivering ----------------------------------------------------------

    def _drain(self) -> None:
        """Deliver the run that follows ``last``; then watch the gap, if one is left."""
        while self.last + 1 in self._held:
            self.last += 1
            message = self._held.pop(self.last)
            waiter = self._waiters.pop(self.last, None)
            try:
                self._deliver(message, waiter)
            except Exception:
                # One bad delivery must not stop the room: later ones still go.
                log.failure("delivering message {seq}", seq=self.last)
        if self.known <= self.last:
            self._cancel_timer()
        elif self._timer is None and not self._filling:
            self._timer = self._clock.callLater(self._hold_seconds, self._gap_timed_out)

    def _gap_timed_out(self) -> None:
        self._timer = None
        if not self.stopped and self.known > self.last and not self._filling:
            self._start_fill(open_ended=False)

    def _cancel_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _start_fill(self, open_ended: bool) -> None:
        first = self.last + 1
        # Up to the highest known, held ones included: one read closes every
        # gap at once, where stopping at the first held message would wait a
        # hold per gap.
        last = None if open_ended else self.known
        self._filling = True
        self.fills += 1
        try:
            reading = self._fill(first, last, self._batch)
        except Exception:
            reading = defer.fail(Failure())
        reading.addCallbacks(
            self._filled, self._fill_failed, callbackArgs=(first, last), errbackArgs=(first, last)
        )

    def _filled(self, rows: Sequence[Sequenced], first: int, last: int | None) -> None:
        self._filling = False
        if self.stopped:
            return
        for message in rows:
            if message.seq > self.last and message.seq not in self._held:
                self.filled += 1
            self.offer_quietly(message)
        more = len(rows) >= self._batch
        if more:
            covered = rows[-1].seq
        elif last is None:
            covered = rows[-1].seq if rows else first - 1
        else:
            covered = last
        # Read in full up to ``covered``: a number still missing there was
        # deleted after its commit, and nobody will ever see it.
        while self.last < covered and self.last + 1 not in self._held:
            self.last += 1
        self._drain()
        if self._filling:
            return
        if more or self._resync_wanted:
            self._cancel_timer()
            open_ended = last is None or self._resync_wanted
            self._resync_wanted = False
            self._start_fill(open_ended=open_ended)

    def offer_quietly(self, message: Sequenced) -> None:
        """``offer`` without delivering yet: rows of one fill go in as one run."""
        if message.seq <= self.last or message.seq in self._held:
            return
        self._held[message.seq] = message
        self.known = max(self.known, message.seq)

    def _fill_failed(self, failure: Failure, first: int, last: int | None) -> None:
        self._filling = False
        log.failure("reading messages {first} to {last} back", failure, first=first, last=last)
        if self.stopped or self._timer is not None:
            return
        # A resync that failed is tried again as one: nothing may show the gap.
        retry = self.resync if last is None else self._gap_timed_out
        self._timer = self._clock.callLater(FILL_RETRY_SECONDS, self._retry, retry)

    def _retry(self, retry: Callable[[], None]) -> None:
        self._timer = None
        retry()
