"""The fan-out: what the core tells the other nodes after each commit, and hears from them.

``ChatService`` holds one fan-out. On one node it is a ``LocalFanout``:
nothing to tell anyone, nothing arrives, and the core delivers each commit
as it is reported, exactly as it always did (rooms get no sequencer). In
cluster mode it is a ``RedisFanout`` (chatd/cluster/redis.py): the core
announces each committed room message, each direct message and each
membership change there, and the fan-out hands what the other nodes
announced back to the core (``ChatService.announced``, ``direct_announced``,
``membership_announced``, ``resync_rooms``).

This module imports nothing of the core, so the core may import it.
"""

from typing import Any

from twisted.internet import defer


class LocalFanout:
    """One node alone: announcements go nowhere, and no other node's arrive.

    ``ordered`` False tells the core to keep its single-node path: a room's
    commits are reported by the one writer in sequence order, so they need
    no sequencer.
    """

    ordered = False

    def attach(self, service: Any) -> None:
        """The service that receives what other nodes announce (none, here)."""

    def room_message(self, room_key: str, message: Any) -> None:
        """Announce a committed room message: nobody else to tell."""

    def direct_message(self, recipient_key: str, sender_key: str, message: Any) -> defer.Deferred:
        """Announce a direct message; fires with the number of nodes that took it: 0."""
        return defer.succeed(0)

    def membership(self, room_key: str, room: str, user: str, joined: bool) -> None:
        """Announce that ``user`` joined (or left) ``room`` for the cluster: nobody to tell."""

    def user_arrived(self, user_key: str, name: str) -> defer.Deferred:
        """``user_key`` got its first session here; fires with whether it was online elsewhere."""
        return defer.succeed(False)

    def user_left(self, user_key: str) -> defer.Deferred:
        """``user_key``'s last session here ended; fires with whether it is online elsewhere."""
        return defer.succeed(False)
