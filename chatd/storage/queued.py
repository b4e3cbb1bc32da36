"""What both databases share: queues of named transactions for a writer and a reader thread.

Each backend makes its queues (``_writes``, ``_reads``) and the threads that
empty them, batching and committing in its own way; reading, closing,
counting the queued writes and answering on the reactor are the same for
both, and live here.
"""

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

# Put on both queues by ``close``: a thread that takes it stops.
STOP = object()


class QueuedWork:
    """A database whose work runs on a writer thread and a reader thread (a mixin).

    The backend sets ``_writes`` and ``_reads`` (queues), ``_threads`` (the
    threads it started), ``_closed = None``, and calls ``_stopped`` from the
    reactor as each thread ends.
    """

    def read(self, body: Callable[..., Any], *args: Any) -> Deferred:
        """Run ``body(connection, *args)`` on the reader thread; fire with its result."""
        done: Deferred = Deferred()
        self._reads.put((body, args, done))
        return done

    @property
    def queued_writes(self) -> int:
        """How many writes wait for the writer thread (roughly: it is another thread)."""
        return self._writes.qsize()

    def close(self) -> Deferred:
        """Finish every queued write, then close the connections; fire once all threads end."""
        if self._closed is None:
            self._closed = Deferred()
            remaining = [len(self._threads)]

            def one_stopped(_: object) -> None:
                remaining[0] -= 1
                if remaining[0] == 0:
                    self._closed.callback(None)

            self._stopped = one_stopped
            if not self._threads:
                self._closed.callback(None)
            self._writes.put(STOP)
            self._reads.put(STOP)
            self._closing()
        return self._closed

    def _closing(self) -> None:
        """What else a backend stops when asked to close (nothing, unless it says)."""

    def _report(self, outcomes: list[tuple[Deferred, Any]]) -> None:
        """Answer each piece of work with its result or failure (on the reactor thread)."""
        for done, outcome in outcomes:
            if isinstance(outcome, Failure):
                done.errback(outcome)
            else:
                done.callback(outcome)
