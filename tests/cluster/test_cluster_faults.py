"""Cluster mode under faults, on real nodes: three ``twistd`` nodes on one PostgreSQL and one
Redis, and what users see when a node, Redis or PostgreSQL goes away.

The nodes, their database (on the session's private PostgreSQL) and their
private redis-server are shared by the module's tests (starting three nodes
costs more than any one test); a test that kills something leaves it to the
``healthy`` fixture to bring back before the next. Each test uses rooms,
users and a loopback source address (127.0.N.M) of its own, so one test's
throttles and registrations never count against another's. Every wait is
for a line (from a client or a node's log) with a deadline; nothing sleeps.
"""

import socket
import threading
from pathlib import Path

import pytest

from tests.programs import require_module
from tests.serverproc import LineClient, ServerProcess
from tests.services import start_redis

NODES = ("a", "b", "c")
CONNECTED = r"redis \S+ connected"
# Lockouts outlast each test: what is limited stays limited while it is counted.
NODE_ENV = {
    "CHATD_IRC_LISTEN": "off",
    "CHATD_REGISTRATION_LIMIT": "5/3600",
    "CHATD_LOGIN_LOCKOUT": "300",
}


class Client(LineClient):
    """A line client from a source address of the test's own (127.0.0.0/8 is all
    loopback), keeping every room message it reads, whichever read it came in."""

    def __init__(self, port: int, source: str, timeout: float = 20.0) -> None:
        self.socket = socket.create_connection(
            ("127.0.0.1", port), timeout=timeout, source_address=(source, 0)
        )
        self.timeout = timeout
        self._buffer = b""
        # room -> "sender text" of each MSG read, in order.
        self.messages: dict[str, list[str]] = {}
        self.hello = self.read_line()

    def read_line(self) -> str:
        """The next line ('' once closed, by the server or by a reset); MSG lines kept."""
        try:
            line = super().read_line()
        except ConnectionResetError:
            return ""
        if line.startswith("MSG "):
            _kind, room, rest = line.split(" ", 2)
            self.messages.setdefault(room, []).append(rest)
        return line


class Redis:
    """The module's redis-server, which a test may kill and start again on its port."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.server = start_redis(directory)
        self.port = self.server.port
        self.url = self.server.url

    @property
    def running(self) -> bool:
        """Whether the process is alive."""
        return self.server.process.poll() is None

    def kill(self) -> None:
        """``kill -9``: every node loses both its connections at once."""
        self.server.process.kill()
        self.server.process.wait(30)

    def start(self) -> None:
        """Start again on the same port (nodes reconnect to it by themselves)."""
        self.server = start_redis(self.directory, self.port)


class Cluster:
    """Three nodes on one database and one Redis."""

    def __init__(self, root: Path, url: str, redis: Redis) -> None:
        self.url = url
        self.redis = redis
        self.nodes: dict[str, ServerProcess] = {}
        for name in NODES:
            directory = root / name
            directory.mkdir()
            env = {"CHATD_DB": url, "CHATD_REDIS": redis.url, **NODE_ENV}
            self.nodes[name] = ServerProcess(directory, env=env)
        for node in self.nodes.values():
            node.launch()
        for node in self.nodes.values():
            self._wait_started(node)

    @staticmethod
    def _wait_started(node: ServerProcess) -> None:
        if node.port is None:
            node.port = int(node.wait_for(r"chatd listening on tcp \S+ (\d+)", 60).group(1))
        else:
            node.wait_for(r"chatd listening on tcp", 60)
        node.wait_for(CONNECTED, 60)

    def make_healthy(self) -> None:
        """Redis running and every node running and connected to it."""
        if not self.redis.running:
            self.redis.start()
        dead = [node for node in self.nodes.values() if node.process.poll() is not None]
        for node in dead:
            node.launch()
        for node in dead:
            self._wait_started(node)
        for node in self.nodes.values():
            node.wait_for(CONNECTED, 60)

    def stop(self) -> None:
        """Kill every node."""
        for node in self.nodes.values():
            node.stop()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, postgres_server):
    """The module's three nodes (their Redis, their database); stopped after the module."""
    require_module("psycopg", "psycopg[binary]")
    require_module("txredisapi", "txredisapi")
    root = tmp_path_factory.mktemp("faults")
    (root / "redis").mkdir()
    redis = Redis(root / "redis")
    try:
        cluster = Cluster(root, postgres_server.fresh_database("faults"), redis)
        try:
            yield cluster
        finally:
            cluster.stop()
    finally:
        if redis.running:
            redis.kill()


@pytest.fixture
def nodes(cluster) -> Cluster:
    """The cluster, healthy at the start of the test."""
    cluster.make_healthy()
    return cluster


def connect(cluster: Cluster, node: str, source: str) -> Client:
    """A client on ``node`` from ``source``."""
    return Client(cluster.nodes[node].port, source)


def log_in(client: Client, name: str, room: str) -> None:
    """Register, log in and join ``room``; read up to the join's OK."""
    client.login(name)
    assert client.command(f"/join {room}")[-1] == f"OK join {room}"


def said(client: Client, room: str, count: int) -> list[str]:
    """Read until ``count`` messages of ``room`` came in all; their ``sender text``."""
    seen = client.messages.setdefault(room, [])
    while len(seen) < count:
        assert client.read_line(), f"connection closed after {seen}"
    return seen


def said_until(client: Client, room: str, last: str) -> list[str]:
    """Read until ``last`` (``sender text``) came in ``room``; every message of the room."""
    seen = client.messages.setdefault(room, [])
    while last not in seen:
        assert client.read_line(), f"connection closed after {seen}"
    return seen


def history(client: Client, room: str) -> list[str]:
    """``/history`` of ``room``: ``sender text`` in order (replies to lines sent before
    it, pipelined, are passed over)."""
    client.send(f"/history {room} 500")
    lines = client.until(lambda line: line.startswith(("OK history", "ERR ")))
    assert lines[-1].startswith("OK history"), lines[-1]
    return [line.split(" ", 3)[3] for line in lines if line.startswith(f"HISTORY {room} ")]


def await_oks(client: Client, room: str, count: int) -> None:
    """Read until ``count`` ``OK say`` replies came (lines pipelined before); no ERR."""
    oks = 0
    while oks < count:
        line = client.read_line()
        assert line and not line.startswith("ERR "), line
        oks += line == f"OK say {room}"


def send_all(client: Client, texts: list[str]) -> threading.Thread:
    """Send ``texts`` from a thread of its own, pipelined (no reply awaited)."""
    sender = threading.Thread(target=lambda: [client.send(text) for text in texts], daemon=True)
    sender.start()
    return sender


def test_senders_on_three_nodes_see_one_order_equal_to_history(nodes):
    """alice, bob and carol on three nodes each send 15 lines at once into one room: all
    three see the 45 messages once, in one order, and it is /history's."""
    room = "#order"
    clients = {}
    for number, (node, name) in enumerate(zip(NODES, ("alice", "bob", "carol"), strict=True)):
        clients[name] = connect(nodes, node, f"127.0.1.{number + 1}")
        log_in(clients[name], name, room)
    senders = [
        send_all(client, [f"/say {room} {name[0]}{n}" for n in range(15)])
        for name, client in clients.items()
    ]
    seen = {name: said(client, room, 45) for name, client in clients.items()}
    for sender in senders:
        sender.join(30)
    assert seen["alice"] == seen["bob"] == seen["carol"]
    assert len(set(seen["alice"])) == 45
    assert history(clients["bob"], room) == seen["alice"]


def test_a_node_killed_mid_traffic_loses_nothing_acknowledged(nodes):
    """alice on node a and bob on node b send at once; node a is killed with kill -9 after
    alice's fifth OK. alice reconnects to node c: every message either of them had OK for
    is in /history, and carol (on c all along) saw exactly /history's order."""
    room = "#kill"
    alice = connect(nodes, "a", "127.0.2.1")
    bob = connect(nodes, "b", "127.0.2.2")
    carol = connect(nodes, "c", "127.0.2.3")
    for client, name in ((alice, "alice"), (bob, "bob"), (carol, "carol")):
        log_in(client, name, room)
    bob_sends = send_all(bob, [f"/say {room} b{n}" for n in range(30)])
    alice_acked: list[str] = []
    for n in range(200):
        alice.send(f"/say {room} a{n}")
    while True:
        line = alice.read_line()
        if line == f"OK say {room}":
            alice_acked.append(f"a{len(alice_acked)}")
            if len(alice_acked) == 5:
                nodes.nodes["a"].kill()
        if line == "" or len(alice_acked) == 200:
            break
        assert not line.startswith("ERR "), line
    bob_sends.join(30)
    # bob's OKs: read his replies until he has one per line sent.
    bob_oks = 0
    while bob_oks < 30:
        line = bob.read_line()
        assert line, "bob's node closed his connection"
        if line.startswith(("OK say", "ERR ")):
            assert line == f"OK say {room}", line
            bob_oks += 1
    assert bob.command(f"/say {room} end")[-1] == f"OK say {room}"
    carol_saw = said_until(carol, room, "bob end")
    # alice, back on another node, finds what she was told was kept.
    alice = connect(nodes, "c", "127.0.2.1")
    alice.login("alice")
    kept = history(alice, room)
    assert [f"alice {text}" for text in alice_acked] == [
        entry for entry in kept if entry.startswith("alice ")
    ][: len(alice_acked)]
    assert [f"bob b{n}" for n in range(30)] + ["bob end"] == [
        entry for entry in kept if entry.startswith("bob ")
    ]
    assert carol_saw == kept
    assert len(set(kept)) == len(kept)


def test_redis_killed_and_restarted_during_traffic_catches_up_in_order(nodes):
    """alice (node a) and bob (node b) talk while Redis is killed and, after 10 more lines
    each, started again: each sees every message once, in /history's order."""
    room = "#redis"
    alice = connect(nodes, "a", "127.0.3.1")
    bob = connect(nodes, "b", "127.0.3.2")
    log_in(alice, "alice", room)
    log_in(bob, "bob", room)
    for n in range(10):
        alice.send(f"/say {room} before{n}")
        bob.send(f"/say {room} before{n}")
    await_oks(alice, room, 10)
    await_oks(bob, room, 10)
    marks = {name: len(node.output) for name, node in nodes.nodes.items()}
    nodes.redis.kill()
    for name in ("a", "b"):
        nodes.nodes[name].wait_for("redis connection lost", 30, since=marks[name])
    for n in range(10):
        assert alice.command(f"/say {room} away{n}")[-1] == f"OK say {room}"
        assert bob.command(f"/say {room} away{n}")[-1] == f"OK say {room}"
    marks = {name: len(node.output) for name, node in nodes.nodes.items()}
    nodes.redis.start()
    for name in NODES:
        nodes.nodes[name].wait_for(CONNECTED, 60, since=marks[name])
    # Pipelined on both nodes at once; then each waits for all of its OKs.
    for n in range(10):
        alice.send(f"/say {room} after{n}")
        bob.send(f"/say {room} after{n}")
    await_oks(alice, room, 10)
    await_oks(bob, room, 10)
    assert bob.command(f"/say {room} end")[-1] == f"OK say {room}"
    kept = history(alice, room)
    assert len(kept) == 61 and len(set(kept)) == 61
    assert said_until(alice, room, "bob end") == kept
    assert said_until(bob, room, "bob end") == kept


def test_postgresql_stopped_and_started_errs_then_resumes_by_itself(nodes, postgres_server):
    """PostgreSQL stopped under the cluster: writes on every node get ERR unavailable and
    none of them is kept (no OK without a commit); started again, every node resumes by
    itself, the node that sat idle through the outage too (its first write is kept, not
    refused on the connection that broke meanwhile), and the messages reach everyone."""
    room = "#pg"
    alice = connect(nodes, "a", "127.0.4.1")
    bob = connect(nodes, "b", "127.0.4.2")
    carol = connect(nodes, "c", "127.0.4.3")
    for client, name in ((alice, "alice"), (bob, "bob"), (carol, "carol")):
        log_in(client, name, room)
    assert alice.command(f"/say {room} before")[-1] == f"OK say {room}"
    assert said(bob, room, 1) == ["alice before"]
    marks = {name: len(node.output) for name, node in nodes.nodes.items()}
    postgres_server.stop()
    try:
        for client in (alice, bob):
            reply = client.command(f"/say {room} while down")
            assert reply[-1].startswith("ERR unavailable "), reply
    finally:
        postgres_server.start()
    for name in ("a", "b"):
        nodes.nodes[name].wait_for(r"is reachable again", 60, since=marks[name])
    # Node c sat idle through the outage: its reader's and writer's connections broke
    # unseen. A registration there (a read, then a write) and carol's message are kept.
    dave = connect(nodes, "c", "127.0.4.4")
    assert dave.command("/register dave password1")[-1] == "OK register dave"
    assert carol.command(f"/say {room} idle through it")[-1] == f"OK say {room}"
    assert alice.command(f"/say {room} after")[-1] == f"OK say {room}"
    assert bob.command(f"/say {room} from bob")[-1] == f"OK say {room}"
    expected = ["alice before", "carol idle through it", "alice after", "bob from bob"]
    for client in (alice, bob, carol):
        assert said_until(client, room, "bob from bob") == expected
    assert history(alice, room) == expected


def test_failed_logins_spread_over_three_nodes_are_limited_as_one(nodes):
    """30 wrong passwords from one address, one at a time, taking the nodes in turn: the
    address's 10 (CHATD_LOGIN_FAILURES_PER_ADDRESS) are checked, and then every node
    refuses (one node alone would have checked 10 each: 30)."""
    source = "127.0.5.1"
    owner = connect(nodes, "a", "127.0.5.2")
    owner.login("mallet")
    clients = [connect(nodes, node, source) for node in NODES]
    replies = []
    for n in range(30):
        replies.append(clients[n % 3].command("/login mallet wrong-password")[-1])
    checked = [reply for reply in replies if reply.startswith("ERR bad-credentials")]
    refused = [reply for reply in replies if reply.startswith("ERR too-many-attempts")]
    assert len(checked) + len(refused) == 30, replies
    # A node may check one more before another node's failure reaches it (the counts
    # travel on Redis): at most one each for the two other nodes.
    assert 10 <= len(checked) <= 12, replies
    assert all(reply.startswith("ERR too-many-attempts") for reply in replies[-15:]), replies


def test_parallel_registrations_spread_over_three_nodes_get_one_allowance(nodes):
    """15 registrations sent at once from one address, 5 to each node, with
    CHATD_REGISTRATION_LIMIT=5/3600: exactly 5 accounts are created in the cluster."""
    source = "127.0.6.1"
    clients = [connect(nodes, node, source) for node in NODES for _ in range(5)]
    for number, client in enumerate(clients):
        client.send(f"/register reg{number} password1")
    replies = [client.until(lambda line: line.startswith(("OK ", "ERR ")))[-1]
               for client in clients]
    created = [reply for reply in replies if reply.startswith("OK register")]
    assert len(created) == 5, "\n".join(replies)
    assert all(reply.startswith(("OK register", "ERR too-many-attempts")) for reply in replies)


def test_a_burst_of_wrong_logins_to_three_nodes_at_once_is_checked_as_on_one(nodes):
    """30 wrong passwords from one address sent at the same moment, 10 to each node: the
    logins in flight are counted for the cluster, so about the address's 10 are checked,
    not 10 per node; the rest are refused without bcrypt."""
    source = "127.0.7.1"
    owner = connect(nodes, "b", "127.0.7.2")
    owner.login("burst")
    clients = [connect(nodes, node, source) for node in NODES for _ in range(10)]
    for client in clients:
        client.send("/login burst wrong-password")
    replies = [client.until(lambda line: line.startswith(("OK ", "ERR ")))[-1]
               for client in clients]
    checked = [reply for reply in replies if reply.startswith("ERR bad-credentials")]
    assert all(reply.startswith(("ERR bad-credentials", "ERR too-many-attempts"))
               for reply in replies), replies
    # As above: a failure may reach another node just after it admitted one more.
    assert 1 <= len(checked) <= 12, replies
