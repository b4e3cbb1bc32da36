"""The fan-out on Redis: announcements between the nodes of a cluster, and their presence.

PostgreSQL is the truth; Redis only announces, and may lose what it
announces (pub/sub keeps nothing for a subscriber that is away). So every
announcement is a hint the receiving node can do without: a room message
it missed shows up as a gap in the room's sequence and is read back from
the database (``RoomSequencer``), and after Redis comes back every loaded
room is read from its last delivered message on.

Channels (docs/cluster.md):

- ``chatd:rooms``: each committed room message (room, sequence number,
  message id, and the message itself riding along, with its client-only
  tags if any) and each membership change told once for the cluster
  (``JOIN``/``PART``, with the PART's reason; ``m`` when made by ``/join``
  or ``/part``, which move the user's sessions on every node), and the
  client-only tags sent to a room (IRC's ``TAGMSG``: live only, never read
  back). Every node hears every room: one subscription, and no race between
  loading a room and subscribing to it. Also: ``events`` (new account
  events: every node reads them from the database now, not at its next
  poll), and the presence mirror's ``where`` (one user's state on a node),
  ``node`` (a node's whole list), ``hello`` (asking every node for its
  list) and ``bye`` (a node stopping): see chatd/cluster/presence.py.
- ``chatd:user:<name>``: direct messages to or from that user; a node
  subscribes while the user has a session on it, so ``PUBLISH``'s count of
  receivers says whether the DM reached a session anywhere.

Presence: each node keeps ``chatd:node:<id>`` alive with a heartbeat every
``HEARTBEAT_SECONDS`` that expires after ``NODE_EXPIRY_SECONDS``, and the
users with a session on it in the hash ``chatd:users:<id>``. A user is
online where a live node lists it. A node killed with ``kill -9`` stops
counting once its key expires, and the first live node whose heartbeat
sees that takes its list (once: ``SREM`` decides) and announces the
``PART`` of each of its users not online elsewhere: at most
``NODE_EXPIRY_SECONDS + HEARTBEAT_SECONDS`` (13 s) after the kill.
"""

import json
import uuid
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet import defer, protocol
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from chatd.cluster.presence import ClusterPresence, UserState
from chatd.core.events import DirectMessage, RoomMessage, TagMessage

log = Logger()

ROOMS_CHANNEL = "chatd:rooms"
LOGINS_CHANNEL = "chatd:logins"
USER_CHANNEL = "chatd:user:"
NODES_KEY = "chatd:nodes"
NODE_KEY = "chatd:node:"
USERS_KEY = "chatd:users:"

# A node's key lives this long after its last heartbeat: the bound (with the
# heartbeat) on how long a dead node's users still count as online.
NODE_EXPIRY_SECONDS = 10.0
HEARTBEAT_SECONDS = 3.0
# While Redis is away nothing is announced: rooms are read back this often,
# so messages from other nodes still arrive, later.
RESYNC_WHILE_AWAY_SECONDS = 1.0
# A Redis command that takes longer than this is taken as Redis being away.
REPLY_TIMEOUT_SECONDS = 5.0

# Register a user on this node; answer whether a live node already had it.
# One script, so of two nodes whose first sessions arrive together, exactly
# one hears "nobody else" and tells the cluster.
_ARRIVE = """
local elsewhere = 0
for _, node in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if node ~= ARGV[1] and redis.call('EXISTS', ARGV[4] .. node) == 1
     and redis.call('HEXISTS', ARGV[5] .. node, ARGV[2]) == 1 then
    elsewhere = 1
  end
end
redis.call('HSET', ARGV[5] .. ARGV[1], ARGV[2], ARGV[3])
return elsewhere
"""

# Unregister a user from this node; answer whether a live node still has it.
_LEAVE = """
redis.call('HDEL', ARGV[4] .. ARGV[1], ARGV[2])
for _, node in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if node ~= ARGV[1] and redis.call('EXISTS', ARGV[3] .. node) == 1
     and redis.call('HEXISTS', ARGV[4] .. node, ARGV[2]) == 1 then
    return 1
  end
end
return 0
"""

# The heartbeat: keep this node alive; take (once) the user lists of nodes
# whose keys expired, answering each user of theirs not online on a live node.
# Answers {1 if this node was not listed (it had been taken for dead), the
# number of live nodes, the live nodes..., the users gone...}.
_HEARTBEAT = """
redis.call('SET', ARGV[2] .. ARGV[1], '1', 'PX', ARGV[4])
local relisted = redis.call('SADD', KEYS[1], ARGV[1])
local live = {}
local gone = {}
for _, node in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if redis.call('EXISTS', ARGV[2] .. node) == 1 then
    table.insert(live, node)
  elseif redis.call('SREM', KEYS[1], node) == 1 then
    local users = redis.call('HGETALL', ARGV[3] .. node)
    redis.call('DEL', ARGV[3] .. node)
    for i = 1, #users, 2 do
      local online = 0
      for _, other in ipairs(redis.call('SMEMBERS', KEYS[1])) do
        if redis.call('EXISTS', ARGV[2] .. other) == 1
           and redis.call('HEXISTS', ARGV[3] .. other, users[i]) == 1 then online = 1 end
      end
      if online == 0 then table.insert(gone, users[i + 1]) end
    end
  end
end
local answer = {relisted, #live}
for _, node in ipairs(live) do table.insert(answer, node) end
for _, name in ipairs(gone) do table.insert(answer, name) end
return answer
"""


@dataclass(frozen=True)
class RedisAddress:
    """Where Redis is, from a ``redis://[:password@]host[:port][/db]`` URL."""

    host: str
    port: int = 6379
    db: int = 0
    password: str | None = None


def parse_redis_url(url: str) -> RedisAddress:
    """The address in ``url``; ``ValueError`` saying what is wrong with it."""
    parts = urlsplit(url)
    if parts.scheme != "redis":
        raise ValueError("must be a redis:// URL, such as redis://127.0.0.1:6379/0")
    if not parts.hostname:
        raise ValueError("names no host")
    try:
        port = parts.port or 6379
    except ValueError:
        raise ValueError("the port must be a number from 1 to 65535") from None
    path = parts.path.strip("/")
    if path and not path.isdigit():
        raise ValueError(f"the database must be a number, not {path!r}")
    if parts.query or parts.fragment:
        raise ValueError("takes no query or fragment")
    password = unquote(parts.password) if parts.password is not None else None
    return RedisAddress(parts.hostname, port, int(path or 0), password)


def _call(command, *args, **options) -> defer.Deferred:
    """Run a txredisapi command: a Deferred, also for one refused at once (not connected)."""
    return defer.maybeDeferred(command, *args, **options)


class _Factory(protocol.Factory):
    """Builds txredisapi protocols for a ClientService, the clock injected."""

    # What txredisapi's protocols ask of their factory when AUTH or SELECT fails.
    isLazy = True

    def __init__(self, make, clock) -> None:
        self._make = make
        self._clock = clock

    def buildProtocol(self, addr):
        built = self._make()
        built.factory = self
        # txredisapi times replies out on the global reactor; use ours.
        built.callLater = self._clock.callLater
        return built

    def stopTrying(self) -> None:
        """AUTH or SELECT was refused: the ClientService keeps retrying anyway."""

    def connectionError(self, why: str) -> None:
        log.error("redis refused the connection: {why}", why=why)


class RedisFanout:
    """Announces this node's commits on Redis and hands the other nodes' to the core.

    ``start`` connects (and reconnects, forever); ``stop`` leaves the cluster.
    Nothing waits on Redis: a node whose Redis is away commits and delivers
    its own messages as before, reads the other nodes' from the database
    every ``resync_seconds``, and tells DMs to users not on it to wait in
    their mailboxes.
    """

    ordered = True

    def __init__(
        self,
        url: str,
        reactor,
        node_id: str | None = None,
        heartbeat_seconds: float = HEARTBEAT_SECONDS,
        expiry_seconds: float = NODE_EXPIRY_SECONDS,
        resync_seconds: float = RESYNC_WHILE_AWAY_SECONDS,
    ) -> None:
        self.address = parse_redis_url(url)
        self.node = node_id or uuid.uuid4().hex[:12]
        self._reactor = reactor
        self._heartbeat_seconds = heartbeat_seconds
        self._expiry_ms = int(expiry_seconds * 1000)
        self.service = None
        self._publisher = None
        self._subscriber = None
        self._local_users: dict[str, str] = {}
        # Cluster mode's shared login throttle (share_logins): this node's.
        self._throttle = None
        # The newest message of each room committed here while Redis was
        # away, announced when it is back: a node that heard nothing since
        # has nothing else to show it the gap.
        self._unannounced: dict[str, list] = {}
        # This turn's room messages, announced together at its end.
        self._batch: list[list] = []
        self._batching = None
        self._subscribed_once = False
        self._heartbeat = LoopingCall(self._beat)
        self._heartbeat.clock = reactor
        self._resync = LoopingCall(self._resync_while_away)
        self._resync.clock = reactor
        self._resync_seconds = resync_seconds
        self._clients: list[ClientService] = []
        # A test hook (tests only): called with each announcement (a room
        # message as {"e": "msg", "r": room, "s": seq}); True drops it, as a
        # lost announcement would be.
        self.drop = None
        # Counters, for metrics and tests.
        self.published = 0
        self.received = 0
        self.reconnects = 0
        # Subscribed (SUBSCRIBE answered), and listed (a heartbeat answered):
        # what when_ready waits for.
        self._listening = False
        self._listed = False
        self._ready_waiters: list[defer.Deferred] = []
        # The other nodes' users and their rooms (WHO across nodes).
        self.presence = ClusterPresence()
        # Heartbeats sent so far, and the one that was the last sent when each
        # node was last heard from: a node heard from after a heartbeat was
        # sent is not dropped on that heartbeat's answer (it may have started
        # since the answer's list was made).
        self._beats_sent = 0
        self._heard_in: dict[str, int] = {}
        # Set when the publishing connection comes (back): what this node has
        # is told whole at the next heartbeat answered (changes made while
        # Redis was away were not told).
        self._tell_all = False

    # --- lifecycle -------------------------------------------------------

    def attach(self, service) -> None:
        """The ``ChatService`` this node's announcements come from and go to."""
        self.service = service

    def start(self) -> None:
        """Connect the publishing and the subscribing connections, retrying forever."""
        address = self.address
        retry = backoffPolicy(initialDelay=0.2, maxDelay=2.0)
        for make, ready in ((self._make_publisher, self._publisher_ready),
                            (self._make_subscriber, self._subscriber_ready)):
            endpoint = HostnameEndpoint(self._reactor, address.host, address.port, timeout=5)
            client = ClientService(
                endpoint, _Factory(make, self._reactor), retryPolicy=retry,
                clock=self._reactor, prepareConnection=ready,
            )
            client.startService()
            self._clients.append(client)
        self._resync.start(self._resync_seconds, now=False)

    @defer.inlineCallbacks
    def stop(self):
        """Leave the cluster: this node's users go at once (not after the expiry); disconnect."""
        for call in (self._heartbeat, self._resync):
            if call.running:
                call.stop()
        publisher = self._publisher
        if publisher is not None:
            try:
                # The other nodes drop this node's users from their WHO at once.
                yield self._publish(ROOMS_CHANNEL, {"e": "bye"})
                yield _call(
                    publisher.execute_command, "DEL", NODE_KEY + self.node, USERS_KEY + self.node
                )
                yield _call(publisher.execute_command, "SREM", NODES_KEY, self.node)
            except Exception:
                log.failure("leaving the cluster")
        clients, self._clients = self._clients, []
        yield defer.gatherResults([client.stopService() for client in clients])

    def _protocol_options(self) -> dict:
        address = self.address
        return {
            "password": address.password,
            # SELECT only when needed: database 0 is every connection's own.
            "dbid": address.db or None,
            "convertNumbers": False,
        }

    def _make_publisher(self):
        import txredisapi

        return txredisapi.RedisProtocol(
            replyTimeout=REPLY_TIMEOUT_SECONDS, **self._protocol_options()
        )

    def _make_subscriber(self):
        fanout = self
        import txredisapi

        class Subscriber(txredisapi.SubscriberProtocol):
            def messageReceived(self, pattern, channel, message):
                fanout._received(channel, message)

        return Subscriber(**self._protocol_options())

    def _publisher_ready(self, connection) -> defer.Deferred:
        ready = connection.whenConnected()

        def up(_) -> None:
            self._publisher = connection
            # (ClientService hands a proxy; the protocol fires with itself.)
            connection.whenDisconnected().addCallback(lambda _: self._publisher_lost(connection))
            log.info("redis {host}:{port} connected (node {node})",
                     host=self.address.host, port=self.address.port, node=self.node)
            # Back on Redis: this node and its users are listed again, and
            # the rooms it wrote to meanwhile are announced up to date.
            self._register_users()
            self._tell_all = True
            unannounced, self._unannounced = self._unannounced, {}
            if unannounced:
                self._publish(ROOMS_CHANNEL, {"e": "msgs", "m": list(unannounced.values())})
            if not self._heartbeat.running:
                self._heartbeat.start(self._heartbeat_seconds, now=True)

        return ready.addCallback(up)

    def _publisher_lost(self, connection) -> None:
        if self._publisher is connection:
            self._publisher = None
            self._listed = False
            log.warn("redis connection lost: announcing nothing until it is back")
        if self._heartbeat.running:
            self._heartbeat.stop()

    def _subscriber_ready(self, connection) -> defer.Deferred:
        ready = connection.whenConnected()

        def subscribe(_) -> defer.Deferred:
            # Listed first: a user arriving while SUBSCRIBE is on its way
            # subscribes on its own, behind it.
            self._subscriber = connection
            connection.whenDisconnected().addCallback(lambda _: self._subscriber_lost(connection))
            channels = [ROOMS_CHANNEL, *(USER_CHANNEL + key for key in self._local_users)]
            if self._throttle is not None:
                channels.append(LOGINS_CHANNEL)
            return connection.subscribe(channels)

        def subscribed(_) -> None:
            if self._subscribed_once:
                self.reconnects += 1
            self._subscribed_once = True
            # Whatever was announced while nobody here listened is read back,
            # and every node is asked for its users (WHO across nodes).
            if self.service is not None:
                self.service.resync_rooms()
            self._publish(ROOMS_CHANNEL, {"e": "hello"})
            self._listening = True
            self._wake_if_ready()

        return ready.addCallback(subscribe).addCallback(subscribed)

    def _subscriber_lost(self, connection) -> None:
        if self._subscriber is connection:
            self._subscriber = None
            self._listening = False

    def when_ready(self) -> defer.Deferred:
        """Fires once this node listens on Redis and is listed there (its first heartbeat
        answered); at once if it is now."""
        if self._listening and self._listed:
            return defer.succeed(None)
        waiter: defer.Deferred = defer.Deferred()
        self._ready_waiters.append(waiter)
        return waiter

    def _wake_if_ready(self) -> None:
        if self._listening and self._listed:
            waiters, self._ready_waiters = self._ready_waiters, []
            for waiter in waiters:
                waiter.callback(None)

    @property
    def connected(self) -> bool:
        """Whether both connections are up (announcing and hearing)."""
        return self._publisher is not None and self._subscriber is not None

    def _resync_while_away(self) -> None:
        """Redis away: nothing is heard, so the rooms are read back instead."""
        if self._subscriber is None and self.service is not None:
            try:
                self.service.resync_rooms()
            except Exception:
                log.failure("reading the rooms back")

    # --- announcing ------------------------------------------------------

    def _publish(self, channel: str, fields: dict) -> defer.Deferred:
        """Publish ``fields`` on ``channel``; fires with the receivers (0 if Redis is away)."""
        publisher = self._publisher
        if publisher is None:
            # Not queued: an outage must not pile announcements up in memory,
            # and the other nodes catch up from the database anyway.
            return defer.succeed(0)
        fields["n"] = self.node
        self.published += 1
        # No reply timer per PUBLISH (one timer each is a third of its cost):
        # a Redis that stops answering is found by the heartbeat's script.
        publishing = _call(
            publisher.execute_command, "PUBLISH", channel,
            json.dumps(fields, separators=(",", ":")), apply_timeout=False,
        )

        def failed(failure: Failure) -> int:
            log.warn("publishing on redis failed: {error}", error=failure.getErrorMessage())
            return 0

        return publishing.addCallbacks(lambda count: int(count), failed)

    def room_message(self, room_key: str, message: RoomMessage) -> None:
        """Announce a message this node committed (its origin stays here).

        Messages committed in one reactor turn go out as one announcement at
        its end: under load the writer reports commits in batches, and one
        PUBLISH for a batch costs Redis and every node one message, not one
        per room message.
        """
        entry = [
            room_key, message.room, message.seq, message.message_id, message.at,
            message.sender, message.text, message.kind,
        ]
        if message.tags:
            # Client-only tags ride along (a gap read back from the database has none).
            entry.append([list(pair) for pair in message.tags])
        if self._publisher is None:
            self._unannounced[room_key] = entry
            return
        self._batch.append(entry)
        if self._batching is None:
            self._batching = self._reactor.callLater(0, self._send_batch)

    def _send_batch(self) -> None:
        """Publish the room messages of this turn as one announcement."""
        if self._batching is not None and self._batching.active():
            self._batching.cancel()
        self._batching = None
        batch, self._batch = self._batch, []
        if batch:
            self._publish(ROOMS_CHANNEL, {"e": "msgs", "m": batch})

    def membership(
        self,
        room_key: str,
        room: str,
        user: str,
        joined: bool,
        changed: bool = False,
        reason: str = "",
    ) -> None:
        """Announce, once for the cluster, that ``user`` joined or left ``room`` (``changed``:
        by ``/join`` or ``/part``: its sessions on the other nodes follow; ``reason``: what
        a PART said)."""
        # After the messages before it: a member's last words come before its PART.
        self._send_batch()
        fields = {"e": "member", "r": room_key, "room": room, "u": user, "j": int(joined),
                  "m": int(changed)}
        if reason:
            fields["p"] = reason
        self._publish(ROOMS_CHANNEL, fields)

    def tag_message(self, room_key: str, event: TagMessage) -> None:
        """Announce client-only tags sent to a room (TAGMSG): live only, never read back."""
        self._send_batch()
        self._publish(ROOMS_CHANNEL, {
            "e": "tag", "r": room_key, "f": event.sender, "room": event.target,
            "g": [list(pair) for pair in event.tags], "i": event.message_id, "a": event.at,
        })

    def account_event(self, event_id: int | None) -> None:
        """Announce that account event ``event_id`` was recorded here (a kick, a ban, a
        password change...): every node reads the new events now, not at its next poll."""
        self._publish(ROOMS_CHANNEL, {"e": "events", "i": event_id})

    def user_state(self, user_key: str, state: UserState | None) -> None:
        """Tell the other nodes how ``user_key`` is here now (None: no session here)."""
        self._publish(ROOMS_CHANNEL, {
            "e": "where", "u": user_key, "s": None if state is None else state.to_wire(),
        })

    def _tell_users(self) -> None:
        """Tell the other nodes every user here, replacing what they knew of this node."""
        if self.service is None:
            return
        states = self.service.local_presence()
        self._publish(ROOMS_CHANNEL, {
            "e": "node", "s": {key: state.to_wire() for key, state in states.items()},
        })

    def direct_message(
        self, recipient_key: str, sender_key: str, message: DirectMessage
    ) -> defer.Deferred:
        """Announce a DM to both users' sessions on other nodes; fires with the number of
        nodes listening for the recipient (0: none, or Redis away)."""
        fields = {"e": "dm", "f": message.sender, "u": message.recipient, "t": message.text,
                  "i": message.message_id, "a": message.at}
        if message.kind != "say":
            fields["k"] = message.kind
        if message.tags:
            fields["g"] = [list(pair) for pair in message.tags]
        reaching = self._publish(USER_CHANNEL + recipient_key, dict(fields, to=recipient_key))
        if sender_key != recipient_key:
            self._publish(USER_CHANNEL + sender_key, dict(fields, to=sender_key))
        return reaching

    # --- shared login throttling -----------------------------------------------

    def share_logins(self, throttle) -> defer.Deferred:
        """Make ``throttle`` (a ``LoginThrottle``) count every node's failed and
        successful logins, so spreading guesses over nodes buys no more of them."""
        self._throttle = throttle
        throttle.on_change = self._login_ended
        if self._subscriber is None:
            return defer.succeed(None)  # subscribed to when connected
        return _call(self._subscriber.subscribe, LOGINS_CHANNEL)

    def script(self, source: str, keys: list[str], args: list[str]) -> defer.Deferred:
        """Run a Lua script on Redis (the shared limits, chatd/cluster/policy.py); fires
        with its answer, or fails at once while Redis is away."""
        publisher = self._publisher
        if publisher is None:
            return defer.fail(ConnectionError("redis is not connected"))
        return _call(publisher.eval, source, keys, args)

    def _login_ended(self, outcome: str, address: str, account: str) -> None:
        self._publish(LOGINS_CHANNEL, {"e": "login", "o": outcome, "a": address, "u": account})

    # --- presence ----------------------------------------------------------

    def user_arrived(self, user_key: str, name: str) -> defer.Deferred:
        """List the user on this node and listen for its DMs; fires with whether a live
        node had it already (False when Redis is away: better a JOIN twice than none)."""
        self._local_users[user_key] = name
        asking = self._ask(_ARRIVE, user_key, name, NODE_KEY, USERS_KEY)
        if self._subscriber is None:
            return asking
        # Answered once the node listens for the user's DMs: one sent after the
        # login must find a listener, or it would wait in the mailbox.
        subscribing = _call(self._subscriber.subscribe, USER_CHANNEL + user_key)
        subscribing.addTimeout(REPLY_TIMEOUT_SECONDS, self._reactor)
        subscribing.addErrback(lambda failure: log.failure("subscribing", failure))
        return subscribing.addCallback(lambda _: asking)

    def user_left(self, user_key: str) -> defer.Deferred:
        """Unlist the user here; fires with whether a live node still has it."""
        self._local_users.pop(user_key, None)
        if self._subscriber is not None:
            _call(self._subscriber.unsubscribe, USER_CHANNEL + user_key).addErrback(
                lambda failure: log.failure("unsubscribing", failure)
            )
        return self._ask(_LEAVE, user_key, NODE_KEY, USERS_KEY)

    def _ask(self, script: str, *args: str) -> defer.Deferred:
        publisher = self._publisher
        if publisher is None:
            return defer.succeed(False)
        asking = _call(publisher.eval, script, [NODES_KEY], [self.node, *args])

        def failed(failure: Failure) -> bool:
            log.warn("asking redis about presence failed: {error}",
                     error=failure.getErrorMessage())
            return False

        return asking.addCallbacks(lambda answer: bool(int(answer)), failed)

    def _register_users(self) -> None:
        """List every user with a session here (after a reconnect, or being taken for dead)."""
        publisher = self._publisher
        if publisher is None or not self._local_users:
            return
        fields = [item for pair in self._local_users.items() for item in pair]
        _call(publisher.execute_command, "HSET", USERS_KEY + self.node, *fields).addErrback(
            lambda failure: log.failure("listing this node's users", failure)
        )

    def _beat(self) -> defer.Deferred | None:
        publisher = self._publisher
        if publisher is None:
            return None
        self._beats_sent += 1
        beating = _call(
            publisher.eval, _HEARTBEAT, [NODES_KEY],
            [self.node, NODE_KEY, USERS_KEY, str(self._expiry_ms)],
        )
        beating.addCallback(self._beaten, self._beats_sent)
        beating.addErrback(lambda failure: log.warn(
            "redis heartbeat failed: {error}", error=failure.getErrorMessage()
        ))
        return beating

    def _beaten(self, answer: list, beat: int) -> None:
        relisted, live_count, *rest = answer
        live, gone = rest[: int(live_count)], rest[int(live_count):]
        if int(relisted):
            self._register_users()
        if int(relisted) or self._tell_all:
            self._tell_all = False
            self._tell_users()
        self._listed = True
        self._wake_if_ready()
        # Nodes whose keys expired (dead, or stopped without a word) leave WHO.
        listed = set(live)
        last_known: dict[str, UserState] = {}
        for node in self.presence.nodes():
            if node not in listed and self._heard_in.get(node, 0) < beat:
                for state in self.presence.forget_node(node).values():
                    last_known[state.name] = state
                self._heard_in.pop(node, None)
        if not gone or self.service is None:
            return
        # Users of a dead node, online nowhere now: PART for the cluster, with what
        # their node last told of them (a guest's rooms are known from nothing else).
        log.info("a node stopped: {count} users went with it", count=len(gone))
        for name in gone:
            self.service.user_gone_elsewhere(name, last_known.get(name))

    # --- hearing -----------------------------------------------------------

    def _received(self, channel: str, data: str) -> None:
        try:
            fields = json.loads(data)
            origin = fields.get("n")
            if origin == self.node:
                return  # this node's own, delivered here already
            self._heard_in[origin] = self._beats_sent
            if self.drop is not None and fields["e"] != "msgs" and self.drop(fields):
                return
            self.received += 1
            self._hand_on(channel, fields)
        except Exception:
            # A malformed announcement is one lost: the sequence shows the gap.
            log.failure("an announcement on {channel} could not be used", channel=channel)

    def _hand_on(self, channel: str, fields: dict) -> None:
        service = self.service
        if service is None:
            return
        kind = fields["e"]
        if kind == "msgs":
            drop = self.drop
            for room_key, room, seq, msgid, at, sender, text, message_kind, *more in fields["m"]:
                if drop is not None and drop({"e": "msg", "r": room_key, "s": seq}):
                    continue
                tags = tuple((str(k), str(v)) for k, v in more[0]) if more else ()
                service.announced(room_key, RoomMessage(
                    room, sender, text, int(at), msgid, int(seq), message_kind, None, tags
                ))
        elif kind == "login" and self._throttle is not None:
            if fields["o"] == "failed":
                self._throttle.failed_elsewhere(fields["a"], fields["u"])
            else:
                self._throttle.succeeded_elsewhere(fields["a"], fields["u"])
        elif kind == "events":
            service.account_events_announced(fields.get("i"))
        elif kind == "where":
            state = fields["s"]
            self.presence.set(
                fields["n"], fields["u"], None if state is None else UserState.from_wire(state)
            )
        elif kind == "node":
            self.presence.replace_node(fields["n"], {
                key: UserState.from_wire(state) for key, state in fields["s"].items()
            })
        elif kind == "hello":
            self._tell_users()
        elif kind == "bye":
            self.presence.forget_node(fields["n"])
            self._heard_in.pop(fields["n"], None)
        elif kind == "member":
            service.membership_announced(
                fields["r"], fields["u"], bool(fields["j"]), fields.get("room", ""),
                bool(fields.get("m")), str(fields.get("p", "")),
            )
        elif kind == "tag":
            tags = tuple((str(k), str(v)) for k, v in fields["g"])
            service.tag_announced(fields["r"], TagMessage(
                fields["f"], fields["room"], tags, fields["i"], int(fields["a"])
            ))
        elif kind == "dm" and channel.startswith(USER_CHANNEL):
            tags = tuple((str(k), str(v)) for k, v in fields.get("g", ()))
            service.direct_announced(fields["to"], DirectMessage(
                fields["f"], fields["u"], fields["t"], fields["i"], int(fields["a"]),
                None, str(fields.get("k", "say")), tags,
            ))
