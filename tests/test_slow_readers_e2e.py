"""200 sessions that never read, a busy room, and the real server.

The shipped send-queue limits (64 KiB soft, 1 MiB hard) are in force. Two
hundred clients log in to #lobby and then never read a byte (their socket
receive buffers are shrunk to 4 KiB, so the kernel holds little for them and
chatd's own queues take the load). Two writers then post 4000 messages of
1000 bytes, 4 MB for each member, in batches; an observer that reads keeps
up with every batch. Each non-reader must be dropped as a slow reader and
logged, every writer's line answered OK, and the observer must get every
message in order. What it costs (RSS, the observer's slowest batch) is
measured by ``scripts/slow_readers.py`` with this same flood, not asserted
here; docs/security.md records the figures.
"""

import socket
from collections.abc import Callable

from tests.serverproc import LineClient, ServerProcess

NON_READERS = 200
WRITERS = 2
BATCHES = 80
PER_BATCH = 50
TEXT = 1000


def non_reader(port: int, name: str, index: int) -> socket.socket:
    """Connect with a tiny receive buffer, register and log in, and never read.

    Eight per loopback source address: chatd checks at most that many passwords
    per address at once (CHATD_BCRYPT_PER_ADDRESS) and refuses the rest.
    """
    connected = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    connected.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    connected.bind((f"127.3.0.{index // 8 + 1}", 0))
    connected.connect(("127.0.0.1", port))
    connected.sendall(f"/register {name} password1\n/login {name} password1\n".encode())
    return connected


def flood(
    server: ServerProcess,
    *,
    batches: int = BATCHES,
    flooding: Callable[[], None] = lambda: None,
    batch_done: Callable[[int], None] = lambda batch: None,
) -> tuple[LineClient, list[LineClient], list[socket.socket]]:
    """Log in the non-readers, an observer and the writers; post the batches.

    Checks every writer's OK and that the observer sees each batch whole and
    in order; calls ``flooding()`` just before the first batch and
    ``batch_done(batch)`` after each (scripts/slow_readers.py measures there).
    Returns the observer and the writers, still logged in, and the
    non-readers' sockets (the caller closes them).
    """
    observer = LineClient(server.port, timeout=30)
    observer.login("observer")
    writers = [LineClient(server.port, timeout=30) for _ in range(WRITERS)]
    for number, writer in enumerate(writers):
        writer.login(f"writer{number}")
    sockets = [non_reader(server.port, f"idle{n}", n) for n in range(NON_READERS)]
    joined = {f"JOIN #lobby idle{n}" for n in range(NON_READERS)}
    observer.until(lambda line: joined.discard(line) or not joined)
    flooding()
    for batch in range(batches):
        writer = writers[batch % WRITERS]
        texts = [f"{batch}.{n} " + "x" * TEXT for n in range(PER_BATCH)]
        writer.socket.sendall(b"".join(f"{text}\n".encode() for text in texts))
        oks = 0
        while oks < PER_BATCH:
            reply = writer.read_line()
            assert reply and not reply.startswith("ERR"), reply
            oks += reply == "OK say #lobby"
        last = f"MSG #lobby writer{batch % WRITERS} {texts[-1]}"
        seen = observer.until(lambda line, last=last: line == last)
        said = [line.split(" ", 3)[3] for line in seen if line.startswith("MSG ")]
        assert said == texts
        batch_done(batch)
    return observer, writers, sockets


def test_two_hundred_non_readers_are_dropped_and_the_room_keeps_going(tmp_path):
    """Every non-reader is dropped and logged as a slow reader; the observer gets every
    message in order, and the server still answers the ones who read."""
    server = ServerProcess(tmp_path).start()
    sockets = []
    try:
        observer, _writers, sockets = flood(server)
        for n in range(NON_READERS):
            server.wait_for(rf"closed connection of idle{n} from \S+: slow-reader")
        # Everyone else saw them go, and the server still answers.
        assert observer.command("/who")[-2] == "WHO #lobby observer writer0 writer1"
        assert observer.command("after the flood")[-1] == "OK say #lobby"
    finally:
        for connected in sockets:
            connected.close()
        server.stop()
