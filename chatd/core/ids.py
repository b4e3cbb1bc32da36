"""Message ids: stable, time-ordered, compact names for room messages and DMs.

The core gives every room message and direct message an id when it is
sent, and the id is stored with the message, so every door names the same
message the same way (IRC's ``msgid`` tag, a web page's anchor, a later
``chathistory`` request). An id is 20 lowercase hex digits:

- 11 of Unix time in milliseconds (enough until the year 2527),
- 4 of a node number, random per process (0000 is kept for the ids the
  schema migration gave to messages stored before ids existed),
- 5 of a counter within the millisecond (a million messages per ms).

Ids sort as text in the order they were made: a clock stepping back never
makes an id sort before an earlier one of the same process.
"""

import secrets

# The counter's range: past it, the id moves on to the next millisecond.
COUNTER_LIMIT = 16**5
# The node of ids given by the migration to messages stored before ids existed.
LEGACY_NODE = 0


def format_message_id(milliseconds: int, node: int, counter: int) -> str:
    """The id of the ``counter``-th message of ``node`` in ``milliseconds``."""
    return f"{milliseconds:011x}{node:04x}{counter:05x}"


class MessageIds:
    """Makes the ids of one process: unique, and never sorting backwards."""

    __slots__ = ("_counter", "_last", "node")

    def __init__(self, node: int | None = None) -> None:
        # A random node keeps two processes (a restart within a millisecond,
        # or two servers) from making the same id.
        self.node = secrets.randbelow(0xFFFF) + 1 if node is None else node
        self._last = -1
        self._counter = 0

    def next(self, milliseconds: int) -> str:
        """A new id for a message sent at ``milliseconds`` (Unix ms)."""
        if milliseconds > self._last:
            self._last, self._counter = milliseconds, 0
        else:
            # Same millisecond, or the clock stepped back: count on from the last.
            self._counter += 1
            if self._counter >= COUNTER_LIMIT:
                self._last, self._counter = self._last + 1, 0
        return format_message_id(self._last, self.node, self._counter)
