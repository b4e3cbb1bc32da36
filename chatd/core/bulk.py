"""Long replies sent a page at a time, as fast as their reader takes them.

Stored direct messages at login, ``/history`` and the recent history of
each room a session is shown can run to megabytes. Written at once they
would sit in the session's send queue and make a client that reads at full
speed look like one that does not read at all. Instead the service hands
the session a ``BulkReply``: the session's ``SendQueue`` pulls one page of
lines from it whenever the transport has room, and only then, so a bulk
reply never waits in memory, never counts against the send-queue limits,
and goes exactly as fast as the client reads.

A page source may ask to hear when a page has been handed over to the
client (``Page.handed_over``): the send queue calls it back once the
client's side has acknowledged the page's bytes (see
``SendQueue.when_handed_over``), or with False when the connection went
first. Stored messages leave the store that way, and only that way.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from twisted.internet import defer
from twisted.logger import Logger

from chatd.core.events import Event

log = Logger()

# Lines per page: a few hundred KiB at most (lines are at most a few KiB).
PAGE_LINES = 50


@dataclass(frozen=True)
class Page:
    """Some lines of a bulk reply, and who wants to know once they were handed over."""

    events: Sequence[Event]
    handed_over: Callable[[bool], None] | None = None


class PageSource:
    """Where a ``BulkReply`` gets its pages (subclasses fill ``next_page``)."""

    def next_page(self) -> "defer.Deferred[Page | None] | Page | None":
        """The next page, or None when there is no more (or a Deferred of either)."""
        raise NotImplementedError

    def abandoned(self) -> None:
        """The reply will not be sent to the end (the connection went): tidy up."""


class EventPages(PageSource):
    """Lines already in memory (a room's recent history), paged out."""

    def __init__(self, events: Sequence[Event], page_lines: int = PAGE_LINES) -> None:
        self._events = events
        self._page_lines = page_lines
        self._next = 0

    def next_page(self) -> Page | None:
        start = self._next
        if start >= len(self._events):
            return None
        self._next = start + self._page_lines
        return Page(self._events[start : self._next])


class BulkReply:
    """One long reply on its way to one session.

    ``SendQueue`` calls ``take`` when the transport has room: it answers the
    next page's encoded lines with the page's hand-over callback, ``None``
    while that page is still being fetched (the reply then calls ``wake``
    once it has arrived), or ``END``. One page is fetched ahead, so the
    database works while the client reads. ``done`` fires (with None) once
    the last line was written or the reply was cancelled; a failure to
    fetch a page is logged and ends the reply early.
    """

    END: tuple[list[bytes], None] = ([], None)

    def __init__(
        self,
        source: PageSource,
        encode: Callable[[Event], list[bytes]],
        observe: Callable[[Event, int], None] | None = None,
    ) -> None:
        """``encode`` is the door's: it turns an event into the door's encoded lines."""
        self.done: defer.Deferred = defer.Deferred()
        self._encode = encode
        self.wake: Callable[[], None] | None = None
        self._source = source
        self._observe = observe
        self._ready: Page | None = None
        self._fetching = False
        self._exhausted = False
        self._finished = False
        self._wanted = False

    def take(self) -> tuple[list[bytes], Callable[[bool], None] | None] | None:
        """The next page's lines and hand-over callback; None if not there yet; END at the end."""
        if self._ready is None and not self._exhausted and not self._fetching:
            self._fetch()
        if self._ready is None:
            if self._exhausted:
                return self.END
            self._wanted = True
            return None
        page, self._ready = self._ready, None
        if not self._exhausted and not self._fetching:
            self._fetch()
        wires = []
        for event in page.events:
            encoded = self._encode(event)
            if self._observe is not None:
                self._observe(event, sum(map(len, encoded)))
            wires += encoded
        return wires, page.handed_over

    def _fetch(self) -> None:
        self._fetching = True
        try:
            fetched = self._source.next_page()
        except Exception as error:
            fetched = defer.fail(error)
        if not isinstance(fetched, defer.Deferred):
            fetched = defer.succeed(fetched)
        fetched.addCallbacks(self._fetched, self._fetch_failed)

    def _fetched(self, page: Page | None) -> None:
        self._fetching = False
        if self._finished:
            if page is not None and page.handed_over is not None:
                page.handed_over(False)
            return
        if page is None or not page.events:
            self._exhausted = True
        else:
            self._ready = page
        self._wake()

    def _fetch_failed(self, failure) -> None:
        self._fetching = False
        log.failure("fetching a page of a bulk reply", failure)
        self._exhausted = True
        self._wake()

    def _wake(self) -> None:
        if self._wanted and self.wake is not None:
            self._wanted = False
            self.wake()

    def completed(self) -> None:
        """Every line was written."""
        if not self._finished:
            self._finished = True
            self.done.callback(None)

    def cancel(self) -> None:
        """The connection is going: nothing more will be written."""
        if not self._finished:
            self._finished = True
            if self._ready is not None and self._ready.handed_over is not None:
                self._ready.handed_over(False)
            self._ready = None
            self._source.abandoned()
            self.done.callback(None)
