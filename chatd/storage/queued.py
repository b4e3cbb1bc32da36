"""What both databases share: queues of named transactions for a writer and a reader thread.

Each backend makes its queues (``_writes``, ``_reads``) and the threads that
empty them, batching and committing in its own way; reading, closing,
counting the queued writes and answering on the reactor are the same for
both, and live here.
"""

from collections.abc import Callable, Iterator
from typing import Any

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from chatd.core.errors import ChatError
from chatd.storage.transactions import RUN_TOGETHER

# Put on both queues by ``close``: a thread that takes it stops.
STOP = object()


class WriteFailed(Exception):
    """A write of a batch run without savepoints failed: the batch was rolled back,
    to run again with a savepoint per write."""


def batch_runs(batch: list, together: bool = True) -> Iterator[tuple[list, Callable]]:
    """A batch's writes, in order, as runs: ``(entries, run)``.

    ``entries`` are the run's ``(body, args, done)``; ``run(connection)`` runs
    them and returns each one's result, or the ``ChatError`` refusing it.
    With ``together``, writes one after another whose body has a form for
    many (``transactions.RUN_TOGETHER``) are one run, that form's one call;
    every other write is a run of its own.
    """
    start = 0
    while start < len(batch):
        body, args, _ = batch[start]
        form = RUN_TOGETHER.get(body) if together else None
        end = start + 1
        if form is not None:
            while end < len(batch) and batch[end][0] is body:
                end += 1
        entries = batch[start:end]
        if end - start > 1:
            yield entries, lambda connection, form=form, entries=entries: form(
                connection, [entry[1] for entry in entries]
            )
        else:
            yield entries, lambda connection, body=body, args=args: [body(connection, *args)]
        start = end


def answered(entries: list, results: list) -> list[tuple[Deferred, Any]]:
    """Each write of ``entries`` with its outcome: its result, or a Failure of the
    ChatError that refused it."""
    return [
        (done, Failure(result) if isinstance(result, ChatError) else result)
        for (_, _, done), result in zip(entries, results, strict=True)
    ]


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
