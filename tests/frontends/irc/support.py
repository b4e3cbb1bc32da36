"""An IRC client over StringTransport, on the in-memory server of tests/support.py."""

import base64

from chatd.frontends.irc.message import parse
from chatd.frontends.irc.protocol import IRCFactory
from tests.support import ChatHarness, LineTransport


class IRCHarness(ChatHarness):
    """The in-memory chatd server with its IRC door beside the line door."""

    def __init__(self, *arguments, **options):
        super().__init__(*arguments, **options)
        self.irc = IRCFactory(
            self.config, self.accounts, self.portal, self.clock, self.chat,
            limits=self.factory.limits, telemetry=self.telemetry, gate=self.factory.gate,
        )

    def irc_client(self, host: str = "127.0.0.1", port: int = 50000) -> "IRCClient":
        """Connect an IRC client (nothing is said yet)."""
        return IRCClient(self, host, port)

    def account(self, name: str, password: str = "password1") -> None:
        """Create an account through the line door."""
        line = self.client()
        assert line.send(f"/register {name} {password}") == [f"OK register {name}"]
        line.close()


class IRCClient:
    """One IRC connection driven line by line; ``send`` returns the lines it caused."""

    def __init__(self, harness: IRCHarness, host: str, port: int) -> None:
        self.harness = harness
        self.transport = LineTransport(host, port)
        self.protocol = harness.irc.buildProtocol(self.transport.getPeer())
        self.transport.protocol = self.protocol
        self.protocol.makeConnection(self.transport)
        self._read = 0

    def send(self, *lines: str | bytes, bytewise: bool = False) -> list[str]:
        """Send lines (CR LF added); return the server lines written since the last read."""
        for line in lines:
            data = line.encode() if isinstance(line, str) else line
            data += b"\r\n"
            if bytewise:
                for index in range(len(data)):
                    self.protocol.dataReceived(data[index : index + 1])
                    self.harness.end_turn()
            else:
                self.protocol.dataReceived(data)
                self.harness.end_turn()
        return self.lines()

    def lines(self) -> list[str]:
        """Server lines written since the last call, without CR LF."""
        value = self.transport.value()
        new, self._read = value[self._read :], len(value)
        assert new == b"" or new.endswith(b"\r\n"), new
        return [line.decode() for line in new.split(b"\r\n")[:-1]]

    def verbs(self, lines: list[str]) -> list[str]:
        """The verb (or numeric) of each line."""
        return [parse(line).verb for line in lines]

    def login_with_pass(self, name: str, password: str = "password1", caps=()) -> list[str]:
        """Register the IRC way with PASS (and CAP REQ for ``caps``); return all lines."""
        lines = []
        if caps:
            lines += self.send("CAP LS 302", f"CAP REQ :{' '.join(caps)}")
        lines += self.send(f"PASS {password}", f"NICK {name}", "USER u 0 * :Real Name")
        if caps:
            lines += self.send("CAP END")
        return lines

    def login_with_sasl(self, name: str, password: str = "password1", caps=()) -> list[str]:
        """CAP negotiation with SASL PLAIN; return all lines."""
        payload = base64.b64encode(f"\0{name}\0{password}".encode()).decode()
        lines = self.send("CAP LS 302", f"CAP REQ :{' '.join(('sasl', *caps))}")
        lines += self.send("AUTHENTICATE PLAIN", f"AUTHENTICATE {payload}")
        lines += self.send(f"NICK {name}", "USER u 0 * :Real Name", "CAP END")
        return lines


class IRCSocketClient:
    """A blocking IRC client on a real socket, for end-to-end tests."""

    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 10.0) -> None:
        import socket

        self.socket = socket.create_connection((host, port), timeout=timeout)
        self._buffer = b""

    def send(self, *lines: str) -> None:
        """Send lines, each with CR LF."""
        self.socket.sendall(b"".join(line.encode() + b"\r\n" for line in lines))

    def read_line(self) -> str:
        """The next line from the server ('' once it closed)."""
        while b"\r\n" not in self._buffer:
            data = self.socket.recv(65536)
            if not data:
                return ""
            self._buffer += data
        line, self._buffer = self._buffer.split(b"\r\n", 1)
        return line.decode()

    def until(self, done) -> list[str]:
        """Read lines until one satisfies ``done`` (given the parsed message); return them."""
        lines = []
        while True:
            line = self.read_line()
            if line == "":
                raise AssertionError(f"connection closed after {lines}")
            lines.append(line)
            if done(parse(line)):
                return lines

    def close(self) -> None:
        """Close the socket."""
        self.socket.close()
