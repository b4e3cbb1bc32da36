"""Integration: a whole server in-process on real loopback sockets and a real SQLite file."""

import random

import pytest
import pytest_twisted
from twisted.internet import defer

from tests.netclient import connect, start_server


@pytest.fixture
def server(tmp_path):
    """A running server on port 0; stopped (BYE shutdown, database closed) after the test."""
    server, port = pytest_twisted.blockon(start_server(tmp_path))
    server.port = port
    yield server
    pytest_twisted.blockon(server.stopService())


@pytest_twisted.inlineCallbacks
def test_several_clients_chat_in_rooms(server):
    """Three users talk in #lobby and in a room of their own."""
    alice, bob, carol = yield defer.gatherResults([connect(server.port) for _ in range(3)])
    yield alice.login("alice")
    yield bob.login("bob")
    yield carol.login("carol")
    yield alice.command("hello everyone")
    for client in (bob, carol):
        yield client.expect("MSG #lobby alice hello everyone")
    yield bob.command("/join #den")
    lines = yield carol.command("/join #Den")
    assert lines[:2] == ["JOIN #den carol", "WHO #den bob carol"]
    yield bob.expect("JOIN #den carol")
    yield carol.command("just us")
    yield bob.expect("MSG #den carol just us")
    rooms = yield alice.command("/rooms")
    assert rooms == ["ROOM #den 2", "ROOM #lobby 3", "OK rooms"]


@pytest_twisted.inlineCallbacks
def test_direct_messages_live_and_stored(server):
    """A DM to someone online is delivered; to someone away it waits for their login."""
    alice, bob = yield defer.gatherResults([connect(server.port), connect(server.port)])
    yield alice.login("alice")
    yield bob.login("bob")
    assert (yield alice.command("/msg bob hi"))[-1] == "OK msg bob delivered"
    yield bob.expect("DM alice bob hi")
    bob.transport.loseConnection()
    yield bob.closed
    yield alice.expect("PART #lobby bob")
    assert (yield alice.command("/msg bob see you later"))[-1] == "OK msg bob stored"
    bob = yield connect(server.port)
    lines = yield bob.command("/login bob password1")
    assert [line.split(" ", 2)[2] for line in lines if line.startswith("STORED ")] == [
        "alice see you later"
    ]


@pytest_twisted.inlineCallbacks
def test_one_user_on_several_connections(server):
    """Two connections of one user both get the room's traffic and the user's DMs."""
    bob = yield connect(server.port)
    yield bob.login("bob")
    first, second = yield defer.gatherResults([connect(server.port), connect(server.port)])
    yield first.login("alice")
    lines = yield second.login("alice")
    assert "JOIN #lobby alice" not in lines
    yield bob.command("hi alice")
    yield first.expect("MSG #lobby bob hi alice")
    yield second.expect("MSG #lobby bob hi alice")
    yield bob.command("/msg alice psst")
    yield first.expect("DM bob alice psst")
    yield second.expect("DM bob alice psst")
    first.transport.loseConnection()
    yield first.closed
    who = yield bob.command("/who")
    assert who[-2] == "WHO #lobby alice bob"


@pytest_twisted.inlineCallbacks
def test_random_bytes_do_not_disturb_anyone_else(server):
    """A client sending garbage gets ERR lines, never a crash; others chat on."""
    alice, bob = yield defer.gatherResults([connect(server.port), connect(server.port)])
    yield alice.login("alice")
    yield bob.login("bob")
    noisy = yield connect(server.port)
    generator = random.Random(20261125)
    for round_number in range(50):
        noisy.transport.write(bytes(generator.randrange(256) for _ in range(2000)))
        if round_number % 10 == 0:
            yield alice.command(f"still here {round_number}")
            yield bob.expect(f"MSG #lobby alice still here {round_number}")
    noisy.transport.write(b"\n/ping alive\n")
    yield noisy.expect("OK ping alive")
    assert all(line.startswith(("OK ", "ERR ", "INFO ")) for line in noisy.lines[1:])
    lines = yield alice.command("/who")
    assert lines[-2] == "WHO #lobby alice bob"


@pytest_twisted.inlineCallbacks
def test_shutdown_says_bye_to_everyone(tmp_path):
    """Stopping the service sends BYE shutdown to logged-in and anonymous connections."""
    server, port = yield start_server(tmp_path)
    alice, anonymous = yield defer.gatherResults([connect(port), connect(port)])
    yield alice.login("alice")
    yield server.stopService()
    for client in (alice, anonymous):
        yield client.closed
        assert client.lines[-1] == "BYE shutdown"


@pytest_twisted.inlineCallbacks
def test_messages_survive_a_restart_of_the_service(tmp_path):
    """History and stored messages are in the file: a new server on it has them."""
    server, port = yield start_server(tmp_path)
    alice = yield connect(port)
    yield alice.login("alice")
    registering = yield connect(port)
    yield registering.command("/register bob password1")
    yield alice.command("on the record")
    yield alice.command("/msg bob waiting for you")
    yield server.stopService()
    server, port = yield start_server(tmp_path)
    bob = yield connect(port)
    lines = yield bob.command("/login bob password1")
    assert any(line.endswith(" alice on the record") for line in lines if "HISTORY" in line)
    assert any(line.endswith(" alice waiting for you") for line in lines if "STORED" in line)
    yield server.stopService()


LOGINS_IN_FLIGHT = 4


@pytest_twisted.inlineCallbacks
def test_logins_do_not_stall_chat(tmp_path, monkeypatch):
    """bcrypt runs off the reactor: at the shipped cost (12), with four logins read
    and being checked, alice's messages and ping are all answered before any of
    those logins is. (Were bcrypt on the reactor, every login read before her lines
    would be answered first.) Order of events, no clock."""
    from chatd.auth.passwords import hash_password
    from chatd.frontends.line.protocol import ChatProtocol
    from chatd.storage import transactions
    from chatd.storage.sqlite import schema

    # alice's own hash at cost 4, so that only the logins under test cost 12.
    connection = schema.open_database_file(str(tmp_path / "chatd.sqlite3"))
    with schema.transaction(connection):
        transactions.create_user(connection, "alice", hash_password(b"password1", 4), 0)
    connection.close()
    read: list[str] = []
    all_read: defer.Deferred = defer.Deferred()
    do_login = ChatProtocol.do_login

    def counting_login(protocol, name, password):
        result = do_login(protocol, name, password)
        if name.startswith("nobody"):
            read.append(name)
            if len(read) == LOGINS_IN_FLIGHT:
                all_read.callback(None)
        return result

    monkeypatch.setattr(ChatProtocol, "do_login", counting_login)
    server, port = yield start_server(tmp_path, bcrypt_rounds=12)
    try:
        alice = yield connect(port)
        assert (yield alice.command("/login alice password1"))[-1] == "OK login alice"
        events: list[tuple[str, str]] = []
        others = yield defer.gatherResults([connect(port) for _ in range(LOGINS_IN_FLIGHT)])
        answered = []
        for number, other in enumerate(others):
            other.send(f"/login nobody{number} wrong-password")
            answer = other.expect(lambda line: line.startswith(("OK ", "ERR ")))
            answer.addCallback(lambda lines: events.append(("login", lines[-1])))
            answered.append(answer)
        yield all_read
        for line in ("first while logins run", "second", "third", "/ping during"):
            reply = (yield alice.command(line))[-1]
            events.append(("alice", reply))
        yield defer.gatherResults(answered)
        assert [who for who, _ in events] == ["alice"] * 4 + ["login"] * LOGINS_IN_FLIGHT
        assert [reply for who, reply in events if who == "alice"] == [
            "OK say #lobby", "OK say #lobby", "OK say #lobby", "OK ping during"
        ]
        assert all(reply.startswith("ERR bad-credentials") for who, reply in events[4:])
    finally:
        yield server.stopService()


@pytest_twisted.inlineCallbacks
def test_several_listeners_serve_one_chat(tmp_path):
    """CHATD_LISTEN with two endpoints: clients on either meet in the same rooms."""
    from twisted.internet import reactor

    from chatd.app import ChatdServer
    from chatd.config import Config

    config = Config.from_environ(
        {
            "CHATD_LISTEN": "tcp:0:interface=127.0.0.1, tcp:0:interface=127.0.0.1",
            "CHATD_DB": str(tmp_path / "chatd.sqlite3"),
            "CHATD_BCRYPT_ROUNDS": "4",
            "CHATD_WEB_LISTEN": "off",
        }
    )
    server = ChatdServer(config, reactor)
    server.startService()
    ports = yield defer.gatherResults([listener.listening for listener in server.listeners])
    first, second = [port.getHost().port for port in ports]
    assert first != second
    alice, bob = yield defer.gatherResults([connect(first), connect(second)])
    yield alice.login("alice")
    yield bob.login("bob")
    yield alice.command("across listeners")
    yield bob.expect("MSG #lobby alice across listeners")
    yield server.stopService()


@pytest_twisted.inlineCallbacks
def test_nagle_is_off_for_clients(server):
    """Every TCP connection has TCP_NODELAY, so small lines are not held back."""
    import socket

    client = yield connect(server.port)
    (protocol,) = server.factory.connections
    handle = protocol.transport.getHandle()
    assert handle.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    client.transport.loseConnection()


@pytest_twisted.inlineCallbacks
def test_a_server_that_is_the_process_freezes_what_starting_made(tmp_path):
    """With ``freeze_after_start`` (twistd's server), once it listens the objects made
    while starting are frozen out of garbage collection and young objects are
    collected less often; a server in a test process (the default) leaves the
    collector alone."""
    import gc

    from chatd.app import YOUNG_COLLECTION_THRESHOLD

    gc.unfreeze()
    thresholds = gc.get_threshold()
    for name in ("plain", "process"):
        (tmp_path / name).mkdir()
    server, _port = yield start_server(tmp_path / "plain")
    try:
        yield server.started
        assert gc.get_freeze_count() == 0
        assert gc.get_threshold() == thresholds
    finally:
        yield server.stopService()
    server, _port = yield start_server(tmp_path / "process", freeze_after_start=True)
    try:
        yield server.started
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == (YOUNG_COLLECTION_THRESHOLD, *thresholds[1:])
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)
        yield server.stopService()


def test_twistd_server_freezes_after_start(tmp_path):
    """``make_server`` (what chatd.tac runs) asks for the freeze."""
    from chatd.app import make_server

    server = make_server({"CHATD_DB": str(tmp_path / "chatd.sqlite3")})
    try:
        assert server.freeze_after_start
    finally:
        server.database_lock.release()
