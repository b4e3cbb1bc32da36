"""The fan-out: what the core tells the other nodes after each commit, and hears from them.

``ChatService`` holds one fan-out. On one node it is a ``LocalFanout``:
nothing to tell anyone, nothing arrives, and the core delivers each commit
as it is reported, exactly as it always did (rooms get no sequencer). In
cluster mode it is a ``RedisFanout`` (chatd/cluster/redis.py): the core
announces each committed room message, each direct message, each
membership change and the client-only tags of a TAGMSG there, and the
fan-out hands what the other nodes announced back to the core
(``ChatService.announced``, ``direct_announced``, ``membership_announced``,
``tag_announced``, ``resync_rooms``).

This module imports nothing of the core, so the core may import it.
"""

from typing import Any

from twisted.internet import defer

from chatd.cluster.presence import ClusterPresence


class LocalFanout:
    """One node alone: announcements go nowhere, and no other node's arrive.

    ``ordered`` False tells the core to keep its single-node path: a room's
    commits are reported by the one writer in sequence order, so they need
    no sequencer.
    """

    ordered = False
    # Nobody online elsewhere, ever (never written to on one node).
    presence = ClusterPresence()

    def attach(self, service: Any) -> None:
        """The service that receives what other nodes announce (none, here)."""

    def room_message(self, room_key: str, message: Any) -> None:
        """Announce a committed room message: nobody else to tell."""

    def direct_message(self, recipient_key: str, sender_key: str, message: Any) -> defer.Deferred:
        """Announce a direct message; fires with the number of nodes that took it: 0."""
        return defer.succeed(0)

    def membership(
        self,
        room_key: str,
        room: str,
        user: str,
        joined: bool,
        changed: bool = False,
        reason: str = "",
    ) -> None:
        """Announce that ``user`` joined (or left, saying ``reason``) ``room`` for the
        cluster (``changed``: by ``/join`` or ``/part``, so its sessions elsewhere
        follow): nobody to tell."""

    def tag_message(self, room_key: str, event: Any) -> None:
        """Announce client-only tags sent to a room (IRC's TAGMSG): nobody to tell."""

    def user_state(self, user_key: str, state: Any) -> None:
        """Tell the other nodes ``user_key``'s rooms and away text here: nobody to tell."""

    def account_event(self, event_id: int | None) -> None:
        """Announce that account event ``event_id`` was recorded (None: one not known by
        number), for the other nodes to read it now: nobody to tell."""

    def user_arrived(self, user_key: str, name: str) -> defer.Deferred:
        """``user_key`` got its first session here; fires with whether it was online elsewhere."""
        return defer.succeed(False)

    def user_left(self, user_key: str) -> defer.Deferred:
        """``user_key``'s last session here ended; fires with whether it is online elsewhere."""
        return defer.succeed(False)
