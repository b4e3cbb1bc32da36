"""200 sessions that never read, a busy room, and the real server's memory (RSS from /proc).

The shipped send-queue limits (64 KiB soft, 1 MiB hard) are in force. Two
hundred clients log in to #lobby and then never read a byte (their socket
receive buffers are shrunk to 4 KiB, so the kernel holds little for them and
chatd's own queues take the load). Two writers then post 4000 messages of
1000 bytes, 4 MB for each member, in batches; an observer that reads keeps
up with every batch. (The server's kernel send buffer, autotuned up to
``net.ipv4.tcp_wmem``'s 4 MiB, takes the first megabytes of each socket:
far less traffic never reaches chatd's queue at all.) Each non-reader must
be dropped as a slow reader and logged, the observer must get every message
in order and in time, and the server's peak RSS (VmHWM) must stay within a
generous bound of its RSS before the flood. docs/security.md records the figures this prints.
"""

import socket
import time

from tests.serverproc import LineClient, ServerProcess

NON_READERS = 200
WRITERS = 2
BATCHES = 80
PER_BATCH = 50
TEXT = 1000
# Measured: about 5.5 MiB of growth, flat however long the flood goes on (an
# unbounded queue grows with the traffic instead). The bound is generous on
# purpose, so a slow CI machine or another allocator does not make it flaky.
PEAK_GROWTH_BOUND = 64 * 1024 * 1024
BATCH_SECONDS_BOUND = 10.0


def memory(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of a process, in bytes, from /proc."""
    found = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                found[name] = int(value.split()[0]) * 1024
    return found


def non_reader(port: int, name: str) -> socket.socket:
    """Connect with a tiny receive buffer, register and log in, and never read."""
    connected = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    connected.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    connected.connect(("127.0.0.1", port))
    connected.sendall(f"/register {name} password1\n/login {name} password1\n".encode())
    return connected


def test_two_hundred_non_readers_do_not_grow_the_server(tmp_path):
    """Peak RSS stays bounded, every non-reader is dropped and logged, the room keeps up."""
    server = ServerProcess(tmp_path).start()
    sockets = []
    try:
        observer = LineClient(server.port, timeout=30)
        observer.login("observer")
        writers = [LineClient(server.port, timeout=30) for _ in range(WRITERS)]
        for number, writer in enumerate(writers):
            writer.login(f"writer{number}")
        sockets = [non_reader(server.port, f"idle{n}") for n in range(NON_READERS)]
        joined = {f"JOIN #lobby idle{n}" for n in range(NON_READERS)}
        observer.until(lambda line: joined.discard(line) or not joined)
        before = memory(server.pid)

        slowest = 0.0
        for batch in range(BATCHES):
            writer = writers[batch % WRITERS]
            started = time.monotonic()
            texts = [f"{batch}.{n} " + "x" * TEXT for n in range(PER_BATCH)]
            writer.socket.sendall(b"".join(f"{text}\n".encode() for text in texts))
            oks = 0
            while oks < PER_BATCH:
                reply = writer.read_line()
                assert reply and not reply.startswith("ERR"), reply
                oks += reply == "OK say #lobby"
            last = f"MSG #lobby writer{batch % WRITERS} {texts[-1]}"
            seen = observer.until(lambda line, last=last: line == last)
            slowest = max(slowest, time.monotonic() - started)
            said = [line.split(" ", 3)[3] for line in seen if line.startswith("MSG ")]
            assert said == texts
        after = memory(server.pid)
        growth = after["VmHWM"] - before["VmRSS"]
        print(
            f"\nslow readers: RSS before {before['VmRSS'] / 2**20:.1f} MiB,"
            f" peak {after['VmHWM'] / 2**20:.1f} MiB, after {after['VmRSS'] / 2**20:.1f} MiB,"
            f" peak growth {growth / 2**20:.1f} MiB; slowest batch {slowest:.2f} s"
        )

        for n in range(NON_READERS):
            server.wait_for(rf"closed connection of idle{n} from \S+: slow-reader")
        # Everyone else saw them go, and the server still answers at once.
        assert observer.command("/who")[-2] == "WHO #lobby observer writer0 writer1"
        assert growth < PEAK_GROWTH_BOUND
        assert slowest < BATCH_SECONDS_BOUND
    finally:
        for connected in sockets:
            connected.close()
        server.stop()
