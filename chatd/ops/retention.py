"""Retention: old rows are deleted in the background, a small batch at a time.

``CHATD_ROOM_HISTORY_DAYS`` bounds how long room messages (and the history of
direct messages, ``direct_history``) are kept and
``CHATD_STORED_MESSAGE_DAYS`` how long an undelivered direct message waits
for its recipient; either may be ``off`` (the default: keep forever).
Account events (the bans and deletions the admin command line leaves for the
server) are always dropped after ``ACCOUNT_EVENT_DAYS``: the server only
needs the ones it has not polled yet, a second or so old.

Every ``interval`` seconds of the injected clock, each table is purged of
rows older than its age, ``batch`` rows per ``Database.write``: each batch
is one short transaction in the writer's queue, and the next batch is only
queued after the previous one committed, so chat's own writes never wait
behind more than one batch. A row exactly as old as the limit is kept; one
millisecond older, it goes.

Deleting room history also drops it from the recent messages the chat
service keeps in memory for rooms that have members, so a purged message is
not replayed on ``/join`` either.

In a cluster one node purges for all (``lock``: a PostgreSQL advisory lock,
chatd/storage/singleton.py): each round, the node holding the lock deletes;
every other node only drops the purged age from its memory. When the holder
dies, the next node to start a round takes the lock over.
"""

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from chatd.frontends.line.render import format_timestamp
from chatd.storage import transactions

DAY_MS = 24 * 60 * 60 * 1000
ACCOUNT_EVENT_DAYS = 7
PURGE_INTERVAL_SECONDS = 300.0
PURGE_BATCH = 500

log = Logger()


class RetentionService(Service):
    """Purges room history, stored messages and account events past their age."""

    name = "retention"

    def __init__(
        self,
        database,
        clock,
        chat,
        telemetry,
        room_history_days: float | None,
        stored_message_days: float | None,
        interval: float = PURGE_INTERVAL_SECONDS,
        batch: int = PURGE_BATCH,
        lock=None,
    ) -> None:
        """``lock`` decides whether this node deletes (``singleton_lock``; None: it
        always does, one node alone)."""
        self._database = database
        self._clock = clock
        self._chat = chat
        self._telemetry = telemetry
        self._policies = [
            (table, purge, days)
            for table, purge, days in (
                ("room_messages", transactions.purge_room_messages, room_history_days),
                # The history of direct messages is history too: kept as long.
                ("direct_history", transactions.purge_direct_history, room_history_days),
                ("stored_messages", transactions.purge_stored_messages, stored_message_days),
                ("account_events", transactions.purge_account_events, ACCOUNT_EVENT_DAYS),
            )
            if days is not None
        ]
        self._batch = batch
        self._loop = LoopingCall(self.purge)
        self._loop.clock = clock
        self._interval = interval
        self._stopping = False
        self._lock = lock
        # Rounds this node skipped because another node runs the job (tests, metrics).
        self.skipped = 0

    def startService(self) -> None:
        """Purge now, then every interval."""
        super().startService()
        self._loop.start(self._interval, now=True).addErrback(
            lambda failure: log.failure("retention stopped", failure)
        )

    def stopService(self):
        """Stop purging (a batch already queued still commits) and give the job up."""
        super().stopService()
        self._stopping = True
        if self._loop.running:
            self._loop.stop()
        if self._lock is not None:
            # Another node takes the job over at its next round, not after a timeout.
            return self._lock.release()
        return None

    @defer.inlineCallbacks
    def purge(self):
        """Delete everything past its age, one batch per write; fire when done."""
        now = int(self._clock.seconds() * 1000)
        if self._lock is not None and self._policies:
            held = yield self._lock.take()
            if not held:
                # Another node deletes; the purged age still leaves this one's memory.
                self.skipped += 1
                for table, _purge, days in self._policies:
                    if table == "room_messages":
                        self._chat.forget_history_before(now - int(days * DAY_MS))
                return
        for table, purge_batch, days in self._policies:
            before = now - int(days * DAY_MS)
            deleted = 0
            try:
                while not self._stopping:
                    count = yield self._database.write(purge_batch, before, self._batch)
                    deleted += count
                    if count < self._batch:
                        break
            except Exception:
                log.failure("retention of {table} failed", table=table)
                continue
            if table == "room_messages":
                self._chat.forget_history_before(before)
            if deleted:
                self._telemetry.purged(table, deleted, format_timestamp(before))
