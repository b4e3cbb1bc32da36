"""WebSocket clients for the web door's tests: in memory, and over real loopback sockets.

``WebHarness`` puts the web door's Autobahn protocol on a ``ChatHarness``
(inline database and bcrypt, ``task.Clock``) over ``FakeConnection``, an
in-memory TCP connection; ``WebClient`` writes the client's handshake and
masked frames into it and parses the server's frames out of what it wrote.
``WebCollector`` is a real Autobahn client, for a whole server on loopback
(``start_web_server``); its waits are Deferreds with a timeout, as in
``tests/netclient.py``.
"""

import base64
import os
import struct
from collections.abc import Callable

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet import defer, reactor, ssl
from twisted.internet.address import IPv4Address
from twisted.internet.endpoints import SSL4ClientEndpoint, TCP4ClientEndpoint
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from chatd.config import Config
from chatd.frontends.web.socket import ChatWebSocketFactory, OriginPolicy
from tests.netclient import TIMEOUT, start_server
from tests.support import ChatHarness

TEXT, BINARY, CLOSE, PING, PONG = 0x1, 0x2, 0x8, 0x9, 0xA


def client_frame(payload: bytes, opcode: int = TEXT, final: bool = True) -> bytes:
    """One masked client frame (clients must mask, RFC 6455 5.3)."""
    mask = os.urandom(4)
    head = bytes([(0x80 if final else 0) | opcode])
    length = len(payload)
    if length < 126:
        head += bytes([0x80 | length])
    elif length < 1 << 16:
        head += bytes([0x80 | 126]) + struct.pack("!H", length)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", length)
    masked = bytes(byte ^ mask[index % 4] for index, byte in enumerate(payload))
    return head + mask + masked


def parse_frames(data: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """Split unmasked server frames out of ``data``: ([(opcode, payload)], the rest)."""
    frames = []
    while len(data) >= 2:
        opcode, length, offset = data[0] & 0x0F, data[1] & 0x7F, 2
        if length == 126:
            if len(data) < 4:
                break
            length, offset = struct.unpack("!H", data[2:4])[0], 4
        elif length == 127:
            if len(data) < 10:
                break
            length, offset = struct.unpack("!Q", data[2:10])[0], 10
        if len(data) < offset + length:
            break
        frames.append((opcode, data[offset : offset + length]))
        data = data[offset + length :]
    return frames, data


def handshake(
    origin: str | None = "http://chat.test",
    host: str = "chat.test",
    protocols: str | None = "chatd.v1",
    extra: dict[str, str] | None = None,
) -> bytes:
    """A browser's opening handshake for ``/ws``."""
    headers = {
        "Host": host,
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
        "Sec-WebSocket-Version": "13",
    }
    if origin is not None:
        headers["Origin"] = origin
    if protocols is not None:
        headers["Sec-WebSocket-Protocol"] = protocols
    headers.update(extra or {})
    lines = ["GET /ws HTTP/1.1", *(f"{name}: {value}" for name, value in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class FakeConnection(StringTransport):
    """An in-memory TCP connection that tells its protocol when it closes."""

    def __init__(self, host: str = "127.0.0.1", port: int = 40000) -> None:
        super().__init__(peerAddress=IPv4Address("TCP", host, port))
        self.closed = False
        self.aborted = False
        self.protocol = None

    def unregisterProducer(self) -> None:
        """Forget the producer; like a real connection, having none is no error."""
        self.producer = None
        self.streaming = None

    def _close(self) -> None:
        if not self.closed:
            self.closed = True
            self.protocol.connectionLost(Failure(ConnectionDone()))

    def loseConnection(self) -> None:
        """Close after the written data, as a real transport does."""
        super().loseConnection()
        self._close()

    def abortConnection(self) -> None:
        """Close at once."""
        self.aborted = True
        self._close()


class WebClient:
    """One browser-like client of a ``WebHarness``."""

    def __init__(self, harness: "WebHarness", connection: FakeConnection, request: bytes) -> None:
        self.harness = harness
        self.connection = connection
        self.protocol = harness.factory_web.buildProtocol(connection.getPeer())
        connection.protocol = self.protocol
        self.protocol.makeConnection(connection)
        self._read = 0
        self._pending = b""
        self.protocol.dataReceived(request)
        harness.end_turn()
        self.response = self._take_response()

    def _take_response(self) -> bytes:
        value = self.connection.value()
        end = value.find(b"\r\n\r\n")
        if end < 0:
            self._read = len(value)
            return value
        self._read = end + 4
        return value[: end + 4]

    @property
    def status(self) -> int:
        """The handshake's HTTP status code."""
        return int(self.response.split(b" ", 2)[1])

    def frames(self) -> list[tuple[int, bytes]]:
        """Every server frame since the last call."""
        value = self.connection.value()
        data, self._read = self._pending + value[self._read :], len(value)
        frames, self._pending = parse_frames(data)
        return frames

    def lines(self) -> list[str]:
        """The text messages since the last call (other frames must not be there)."""
        frames = self.frames()
        assert all(opcode == TEXT for opcode, _ in frames), frames
        return [payload.decode() for _, payload in frames]

    def send_frame(self, frame: bytes) -> None:
        """Hand raw bytes to the server."""
        self.protocol.dataReceived(frame)
        self.harness.end_turn()

    def send(self, *messages: str | bytes) -> list[str]:
        """Send each as one text message; return the messages they caused."""
        for message in messages:
            data = message.encode() if isinstance(message, str) else message
            self.send_frame(client_frame(data))
        return self.lines()

    def login(self, name: str, password: str = "password1") -> list[str]:
        """Register (if needed) and log in; return the login's messages."""
        self.send(f"/register {name} {password}")
        lines = self.send(f"/login {name} {password}")
        assert lines[-1] == f"OK login {name}", lines
        return lines


class WebHarness(ChatHarness):
    """A ``ChatHarness`` with the web door's WebSocket factory on its line factory."""

    def __init__(self, config: Config | None = None, **kwargs) -> None:
        super().__init__(config, **kwargs)
        self.factory_web = ChatWebSocketFactory(self.factory, OriginPolicy(self.config.web_origins))
        # Autobahn's own timers run on the global reactor: in memory there are none.
        self.factory_web.setProtocolOptions(openHandshakeTimeout=0, closeHandshakeTimeout=0)

    def web_client(self, peer: str = "127.0.0.1", port: int = 40000, **request) -> WebClient:
        """A client from ``peer`` that has sent its handshake (see ``status``, ``response``)."""
        connection = FakeConnection(peer, port)
        return WebClient(self, connection, handshake(**request))

    def opened(self, peer: str = "127.0.0.1", **request) -> WebClient:
        """A client whose handshake succeeded; its HELLO already read."""
        client = self.web_client(peer, **request)
        assert client.status == 101, client.response
        hello = client.lines()
        assert len(hello) == 1 and hello[0].startswith("HELLO "), hello
        return client


# --- real sockets -------------------------------------------------------------------


class WebCollector(WebSocketClientProtocol):
    """An Autobahn client collecting text messages; ``expect`` as ``LineCollector``'s."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []
        self._read = 0
        self._waiting: list[tuple[Callable[[str], bool], defer.Deferred]] = []
        self.opened: defer.Deferred = defer.Deferred()
        self.closed: defer.Deferred = defer.Deferred()
        self.close_code: int | None = None

    def onOpen(self) -> None:
        """The handshake succeeded."""
        self.opened.callback(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        """Keep each text message as a line."""
        assert not isBinary
        self.lines.append(payload.decode("utf-8"))
        self._wake()

    def onClose(self, wasClean: bool, code, reason) -> None:
        """Fire ``closed`` (and fail ``opened`` if it never opened)."""
        self.close_code = code
        if not self.opened.called:
            self.opened.errback(ConnectionError(f"refused: {code} {reason}"))
        if not self.closed.called:
            self.closed.callback(code)
        for _, waiting in self._waiting:
            waiting.errback(ConnectionError(f"closed; lines so far: {self.lines}"))
        self._waiting = []

    def _wake(self) -> None:
        while self._waiting:
            wanted, waiting = self._waiting[0]
            for index in range(self._read, len(self.lines)):
                if wanted(self.lines[index]):
                    found = self.lines[self._read : index + 1]
                    self._read = index + 1
                    self._waiting.pop(0)
                    waiting.callback(found)
                    break
            else:
                return

    def expect(self, wanted: str | Callable[[str], bool]) -> defer.Deferred:
        """Fire with the unread lines up to the first that is (or satisfies) ``wanted``."""
        predicate = wanted if callable(wanted) else (lambda line: line == wanted)
        waiting: defer.Deferred = defer.Deferred()
        waiting.addTimeout(TIMEOUT, reactor)
        self._waiting.append((predicate, waiting))
        self._wake()
        return waiting

    def send(self, line: str) -> None:
        """Send one line as one text message."""
        self.sendMessage(line.encode("utf-8"), isBinary=False)

    def command(self, line: str) -> defer.Deferred:
        """Send ``line``; fire with the lines up to its final reply."""
        self.send(line)
        return self.expect(lambda text: text.startswith(("OK ", "ERR ")))

    @defer.inlineCallbacks
    def login(self, name: str, password: str = "password1"):
        """Register if needed and log in; fire with the login's lines."""
        yield self.command(f"/register {name} {password}")
        lines = yield self.command(f"/login {name} {password}")
        assert lines[-1] == f"OK login {name}", lines
        return lines


@defer.inlineCallbacks
def connect_web(
    port: int, origin: str | None = "same", protocols=("chatd.v1",), trust_pem: bytes | None = None
):
    """Open ``ws://127.0.0.1:port/ws`` (Origin: the page's own by default), or with
    ``trust_pem`` (the server's certificate) ``wss://localhost:port/ws``; fire with the
    ``WebCollector`` once HELLO has arrived."""
    host, scheme = ("127.0.0.1", "ws") if trust_pem is None else ("localhost", "wss")
    url = f"{scheme}://{host}:{port}/ws"
    if origin == "same":
        origin = f"{'http' if trust_pem is None else 'https'}://{host}:{port}"
    factory = WebSocketClientFactory(url, origin=origin, protocols=list(protocols))
    factory.protocol = WebCollector
    factory.setProtocolOptions(openHandshakeTimeout=TIMEOUT)
    if trust_pem is None:
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
    else:
        trust = ssl.Certificate.loadPEM(trust_pem)
        endpoint = SSL4ClientEndpoint(
            reactor, "127.0.0.1", port, ssl.optionsForClientTLS("localhost", trust)
        )
    client = yield endpoint.connect(factory)
    yield client.opened
    yield client.expect(lambda line: line.startswith("HELLO "))
    return client


@defer.inlineCallbacks
def start_web_server(tmp_path, **settings):
    """A whole ChatdServer with the web door on 127.0.0.1; fire with (server, line, web) ports."""
    settings.setdefault("web_listen", ("tcp:0:interface=127.0.0.1",))
    server, line_port = yield start_server(tmp_path, **settings)
    web_port = yield server.web_listeners[0].listening
    return server, line_port, web_port.getHost().port
