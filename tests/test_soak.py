"""A bounded random-bytes soak over real sockets while two users chat.

The real twistd runs with its shipped limits (the rate limit included).
Garbage clients, in threads, send seeded random bytes as fast as the
server reads them, reconnecting whenever the server says BYE (floods get
``BYE flood``) or closes; meanwhile alice and bob chat in #lobby. The chat
must be undisturbed (every message seen once, in order, nothing else
interleaved but JOIN/PART), the garbage must only ever get well-formed
lines, and the server must log no traceback. It is bounded by a byte budget,
not by time, and every wait is on a socket.
"""

import random
import select
import socket
import threading

from tests.frontends.line.test_fuzz_protocol import check_well_formed
from tests.serverproc import ServerProcess

GARBAGE_CLIENTS = 4
# Each garbage client sends at least the minimum and at most the budget; it
# stops in between once the chat is over. One connection sends at most
# PER_CONNECTION bytes, then closes its side and reads until the server closes.
MINIMUM_PER_CLIENT = 100_000
BUDGET_PER_CLIENT = 2_000_000
PER_CONNECTION = 64_000
MESSAGES = 30


class Progress:
    """How many garbage connections the server has read to the end, to pace the chat by."""

    def __init__(self) -> None:
        self.finished = 0
        self._changed = threading.Condition()

    def one_more(self) -> None:
        """A garbage connection was read to its end by the server."""
        with self._changed:
            self.finished += 1
            self._changed.notify_all()

    def wait_for(self, count: int) -> bool:
        """Wait until ``count`` connections have finished (False after 60 s)."""
        with self._changed:
            return self._changed.wait_for(lambda: self.finished >= count, timeout=60)


class Garbage(threading.Thread):
    """Sends random bytes until its budget is spent, connection after connection."""

    def __init__(self, port: int, seed: int, stop: threading.Event, progress: Progress) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.random = random.Random(seed)
        self.stop = stop
        self.progress = progress
        self.lines: list[str] = []
        self.connections = 0
        self.sent = 0
        self.error: BaseException | None = None

    def done(self) -> bool:
        """Budget spent, or the chat over and the minimum sent."""
        return self.sent >= BUDGET_PER_CLIENT or (
            self.stop.is_set() and self.sent >= MINIMUM_PER_CLIENT
        )

    def run(self) -> None:
        """Connect, send, read, again, until done; keep any error for the test."""
        try:
            while not self.done():
                self._one_connection()
                self.progress.one_more()
        except BaseException as error:
            self.error = error

    def _one_connection(self) -> None:
        self.connections += 1
        with socket.create_connection(("127.0.0.1", self.port), timeout=30) as connected:
            received = [b""]
            sent_here = 0
            while sent_here < PER_CONNECTION and not self.done():
                chunk = self._chunk()
                try:
                    connected.sendall(chunk)
                except (BrokenPipeError, ConnectionResetError):
                    break
                sent_here += len(chunk)
                self.sent += len(chunk)
                # Take whatever has arrived, without waiting for more.
                while select.select([connected], [], [], 0)[0]:
                    if not self._receive(connected, received):
                        break
                if any(line.startswith("BYE ") for line in self.lines[-3:]):
                    break
            # Our side is done; the server reads the rest and closes (EOF), or
            # has closed already: either way everything sent has been handled.
            try:
                connected.shutdown(socket.SHUT_WR)
            except OSError:
                return
            while self._receive(connected, received):
                pass

    def _receive(self, connected: socket.socket, received: list[bytes]) -> bool:
        """Read once; keep complete lines; False at the end of the connection."""
        try:
            data = connected.recv(65536)
        except ConnectionResetError:
            return False
        if not data:
            return False
        *complete, received[0] = (received[0] + data).split(b"\r\n")
        self.lines.extend(line.decode("utf-8") for line in complete)
        return True

    def _chunk(self) -> bytes:
        size = self.random.choice((1, 7, 100, 2000, 5000))
        kind = self.random.random()
        if kind < 0.6:
            return self.random.randbytes(size)
        if kind < 0.9:
            # Line-shaped garbage: commands with random arguments, some bytes invalid.
            words = [self.random.choice(["/join", "/msg", "/login", "/who", "/say", "//", "/"])]
            words += [self.random.randbytes(self.random.randrange(1, 12)).hex()]
            return " ".join(words).encode() + self.random.choice([b"\n", b"\r\n", b"\xff\n"])
        return b"x" * size * 3 + b"\n"


def test_random_bytes_do_not_disturb_two_users_chatting(tmp_path):
    """Four garbage clients, one connection after another, and alice and bob see exactly
    their chat, each round of it after another garbage connection was handled to its end."""
    server = ServerProcess(tmp_path, env={"CHATD_RATE_LIMIT": "10/40"}).start()
    stop = threading.Event()
    progress = Progress()
    garbage = [Garbage(server.port, seed, stop, progress) for seed in range(GARBAGE_CLIENTS)]
    try:
        alice, bob = server.connect(timeout=30), server.connect(timeout=30)
        alice.login("alice")
        bob.login("bob")
        assert alice.read_line() == "JOIN #lobby bob"
        for thread in garbage:
            thread.start()
        seen_by_alice, seen_by_bob = [], []
        for number in range(MESSAGES):
            # Pace the chat by the noise: a garbage connection handled per round.
            assert progress.wait_for(number + 1)
            seen_by_alice += alice.command(f"a{number}")
            seen_by_bob += bob.command(f"b{number}")
        seen_by_alice += alice.until(lambda line: line == f"MSG #lobby bob b{MESSAGES - 1}")
        stop.set()
        expected = []
        for number in range(MESSAGES):
            expected += [f"MSG #lobby alice a{number}", f"MSG #lobby bob b{number}"]
        assert [line for line in seen_by_alice if line.startswith("MSG")] == expected
        assert [line for line in seen_by_bob if line.startswith("MSG")] == expected
        others = {line.split(" ")[0] for line in seen_by_alice + seen_by_bob}
        assert others <= {"MSG", "OK"}, others
        for thread in garbage:
            thread.join(120)
            assert not thread.is_alive() and thread.error is None, thread.error
        # The noise was real: every client was cut off for flooding more than once.
        assert all(thread.connections > 1 for thread in garbage)
        assert all(thread.sent >= MINIMUM_PER_CLIENT for thread in garbage)
        for thread in garbage:
            for line in thread.lines:
                check_well_formed(line)
                assert not line.startswith(("MSG", "DM", "JOIN", "WHO")), line
        assert any(line == "BYE flood" for thread in garbage for line in thread.lines)
        # Still serving, and nothing went wrong inside.
        assert alice.command("/who")[-2:] == ["WHO #lobby alice bob", "OK who #lobby"]
        assert not [line for line in server.output if "Traceback" in line or "Unhandled" in line]
    finally:
        stop.set()
        server.stop()
