"""Issue 9, items 1 to 3, on the real server (``twistd -ny chatd.tac``) over real sockets.

Mailboxes and room histories are written into the database file before the
server starts (the storing path has tests of its own), so each test spends
its seconds on what it is about: the delivery. The shipped send-queue
limits (64 KiB soft, 1 MiB hard) are in force throughout.

- 1: 471 stored DMs of 3,000 bytes (1.4 MB, past the 1 MiB limit) reach a
  client that reads at full speed, all of them, and leave the store.
- 2: a client that reads part of 2,000 stored DMs and then resets its
  connection gets the rest at its next login; what it is sent twice is
  only what was in flight, as identical lines.
- 3: ``/history #room 500`` with 3 KB lines, and a further session of a
  user in 26 rooms of 1 KB lines, both complete.
- The mailbox limit against senders in parallel (in-process server, real
  sockets and database threads).
"""

import socket
import struct

import pytest
import pytest_twisted
from twisted.internet import defer

from chatd.auth.passwords import hash_password
from chatd.storage import transactions
from chatd.storage.sqlite import schema
from tests.netclient import connect, start_server
from tests.serverproc import LineClient, ServerProcess

PASSWORD = "password1"
DEADLINE_SECONDS = 30.0


def prepare(directory, users: list[str]):
    """A database in ``directory`` with ``users`` (password ``password1``); the open connection."""
    connection = schema.open_database_file(str(directory / "chatd.sqlite3"))
    password_hash = hash_password(PASSWORD.encode(), 4)
    with schema.transaction(connection):
        for name in users:
            transactions.create_user(connection, name, password_hash, 0)
    return connection


def fill_mailbox(connection, recipient: str, texts: list[str]) -> None:
    """Store ``texts`` for ``recipient``, from alice, one millisecond apart."""
    with schema.transaction(connection):
        for number, text in enumerate(texts):
            transactions.store_direct_message(
                connection, recipient, "alice", text, 1_000_000 + number
            )


def fill_room(connection, name: str, texts: list[str]) -> None:
    """Give room ``name`` the history ``texts``, said by alice."""
    with schema.transaction(connection):
        room_id, _, _ = transactions.open_room(connection, name, 0, 50)
        for number, text in enumerate(texts):
            transactions.add_room_message(connection, room_id, "alice", text, 1_000_000 + number)


ITEM1_TEXTS = [f"{number:04d} " + "x" * 2995 for number in range(471)]
ITEM2_TEXTS = [f"{number:04d} " + "y" * 95 for number in range(2000)]
BIG_ROOM_TEXTS = [f"{number:03d} " + "h" * 2996 for number in range(500)]
ROOMS = [f"#room{number:02d}" for number in range(26)]


def room_texts(room: str) -> list[str]:
    """The 50 lines of 1 KB in one of the 26 rooms."""
    return [f"{room} {n:02d} " + "r" * 1000 for n in range(50)]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One real server for the module, its database filled for each test's own user.

    bob has item 1's mailbox, carol item 2's; #big holds 500 lines of 3 KB
    (alice reads it); dave will be in the 26 rooms of 1 KB lines.
    """
    directory = tmp_path_factory.mktemp("delivery")
    connection = prepare(directory, ["alice", "bob", "carol", "dave"])
    fill_mailbox(connection, "bob", ITEM1_TEXTS)
    fill_mailbox(connection, "carol", ITEM2_TEXTS)
    fill_room(connection, "#big", BIG_ROOM_TEXTS)
    for room in ROOMS:
        fill_room(connection, room, room_texts(room))
    connection.close()
    process = ServerProcess(directory, env={"CHATD_MAILBOX_LIMIT": "2000"}).start()
    yield process
    process.stop()


def stored_texts(lines: list[str]) -> list[str]:
    """The texts of the STORED lines among ``lines``."""
    return [line.split(" ", 3)[3] for line in lines if line.startswith("STORED ")]


def log_in(server: ServerProcess, name: str) -> tuple[LineClient, list[str]]:
    """Log ``name`` in, reading at full speed; the client and every line up to OK login."""
    client = server.connect(timeout=DEADLINE_SECONDS)
    client.send(f"/login {name} {PASSWORD}")
    lines = client.until(lambda line: line.startswith(("OK login", "ERR ")))
    return client, lines


def test_a_large_mailbox_reaches_a_full_speed_reader_whole(server):
    """Item 1: 471 DMs of 3,000 bytes: every one arrives, in order, then the store is empty."""
    bob, lines = log_in(server, "bob")
    assert lines[-1] == "OK login bob"
    assert stored_texts(lines) == ITEM1_TEXTS
    bob.command("/quit")
    bob.close()
    # Handed over means gone: the next login gets nothing again.
    again, lines = log_in(server, "bob")
    assert stored_texts(lines) == []
    again.close()
    assert "slow reader" not in "\n".join(server.output)
    assert "Traceback" not in "\n".join(server.output)


def reset(connection: socket.socket) -> None:
    """Drop the connection with a TCP reset, whatever it still holds unread."""
    connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    connection.close()


def test_a_client_that_resets_mid_delivery_gets_the_rest_at_its_next_login(server):
    """Item 2: carol reads 134 of 2,000 stored DMs and resets; her next login gets the rest.

    Only what carol's own socket had taken in but she never read can be
    missing (her TCP acknowledged it, which is what "handed over" means): at
    most her receive buffer's worth. What comes twice is the same line.
    """
    texts = ITEM2_TEXTS

    # A slow link: a small receive buffer, and lines read a few at a time.
    raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.settimeout(DEADLINE_SECONDS)
    raw.connect(("127.0.0.1", server.port))
    local_port = raw.getsockname()[1]
    receive_buffer = raw.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    raw.sendall(f"/login carol {PASSWORD}\n".encode())
    received = b""
    # Until 134 STORED lines are whole: the reads end wherever the segments do,
    # so the last line begun may not have arrived to its end yet.
    while received.count(b"\r\nSTORED ", 0, received.rfind(b"\r\n")) < 134:
        data = raw.recv(512)
        assert data, received[-200:]
        received += data
    first = stored_texts(received.decode().split("\r\n")[:-1])
    reset(raw)
    assert first == texts[: len(first)] and len(first) >= 134
    # The server has seen the reset and ended that session.
    server.wait_for(rf"logout carol from 127\.0\.0\.1:{local_port}\b", DEADLINE_SECONDS)

    again, lines = log_in(server, "carol")
    assert lines[-1] == "OK login carol"
    second = stored_texts(lines)
    assert second, "nothing came back: the rest was lost"
    # The second delivery is the tail of the mailbox, in order.
    start = texts.index(second[0])
    assert second == texts[start:]
    # Repeats are lines bob saw already, identical, timestamps included.
    repeated = [text for text in second if text in set(first)]
    assert repeated == texts[start : len(first)]
    first_lines = {line for line in received.decode().split("\r\n") if line.startswith("STORED")}
    second_lines = [line for line in lines if line.startswith("STORED")]
    assert set(second_lines[: len(repeated)]) <= first_lines
    # Missing: only what bob's receive buffer could hold unread.
    missing = texts[len(first) : start]
    assert sum(len(text) + 40 for text in missing) <= receive_buffer, (len(missing), receive_buffer)
    again.close()


def read_until_reply(client: LineClient, reply: str) -> list[str]:
    """Every line up to and including ``reply`` (an OK), failing on ERR or a close."""
    lines = client.until(lambda line: line == reply or line.startswith("ERR "))
    assert lines[-1] == reply, lines[-3:]
    return lines


def test_history_of_500_long_lines_completes(server):
    """Item 3: /history #big 500 with 3 KB lines (1.5 MB) arrives whole, then OK history."""
    alice, _lines = log_in(server, "alice")
    alice.send("/join #big")
    read_until_reply(alice, "OK join #big")
    alice.send("/history #big 500")
    lines = read_until_reply(alice, "OK history #big")
    history = [line.split(" ", 4)[4] for line in lines if line.startswith("HISTORY #big ")]
    assert history == BIG_ROOM_TEXTS
    assert alice.command("/ping still-here") == ["OK ping still-here"]
    alice.close()


def test_a_further_session_in_26_rooms_of_long_lines_gets_every_room(server):
    """Item 3: a second session of a user in 26 rooms of 50 lines of 1 KB (1.3 MB) gets all."""
    rooms = ROOMS
    first, _lines = log_in(server, "dave")
    for room in rooms:
        first.send(f"/join {room}")
        read_until_reply(first, f"OK join {room}")
    second, lines = log_in(server, "dave")
    assert lines[-1] == "OK login dave"
    for room in rooms:
        history = [line.split(" ", 4)[4] for line in lines if line.startswith(f"HISTORY {room} ")]
        assert history == room_texts(room)
    # Each room's WHO comes before its history, rooms in the order they were joined.
    whos = [line.split(" ")[1] for line in lines if line.startswith("WHO ")]
    assert whos == ["#lobby", *rooms]
    # And the first session is still there, and in order with the second.
    first.send("said after")
    assert read_until_reply(first, "OK say #room25")[-2] == "MSG #room25 dave said after"
    assert second.until(lambda line: line.startswith("MSG "))[-1] == "MSG #room25 dave said after"
    first.close()
    second.close()


@pytest.fixture
def small_mailbox_server(tmp_path):
    """The whole server in-process on a real socket and SQLite file, CHATD_MAILBOX_LIMIT=5."""
    server, port = pytest_twisted.blockon(start_server(tmp_path, mailbox_limit=5))
    server.port = port
    yield server
    pytest_twisted.blockon(server.stopService())


@pytest_twisted.inlineCallbacks
def test_the_mailbox_limit_holds_for_parallel_senders(small_mailbox_server):
    """20 senders on 20 connections DM offline bob at once, limit 5: 5 stored, 15 refused."""
    port = small_mailbox_server.port
    bob = yield connect(port)
    yield bob.command("/register bob password1")
    senders = yield defer.gatherResults([connect(port) for _ in range(20)])
    # One after another: one address may have only so many logins checked at once.
    # What runs in parallel here is the DMs.
    for n, sender in enumerate(senders):
        yield sender.login(f"sender{n}")
    sending = [sender.command(f"/msg bob from {n}") for n, sender in enumerate(senders)]
    answers = yield defer.gatherResults(sending)
    finals = [lines[-1] for lines in answers]
    assert finals.count("OK msg bob stored") == 5
    refused = [final for final in finals if final.startswith("ERR mailbox-full ")]
    assert len(refused) == 15
    # Exactly the five that were answered stored wait for bob.
    lines = yield bob.command("/login bob password1")
    stored = sorted(line.rsplit(" ", 1)[1] for line in lines if line.startswith("STORED "))
    accepted = sorted(
        str(n) for n, lines in enumerate(answers) if lines[-1] == "OK msg bob stored"
    )
    assert stored == accepted
