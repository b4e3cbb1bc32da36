"""The WebSocket at ``/ws``: the line protocol, one text message per line.

The web door adds no protocol of its own. ``ChatWebSocket`` (Autobahn's
server protocol) does the handshake, the Origin check and the framing;
once open it hands each text message to a ``WebChatProtocol``, which is the
line door's ``ChatProtocol`` with messages instead of a byte stream, over a
``LineSocket`` transport that turns each server line into one text message.
So every rule of the line door holds here unchanged: one final reply per
line and in order, the line limit, the rate limit and flood cut-off, send
queues, login throttling and connection counts by the client's address,
PING keep-alive and idle timeouts, and ``BYE`` before every close.

Flow control is the line door's too: the session's ``SendQueue`` is the
producer of the TCP (or TLS) connection under the WebSocket, and pausing
the session's reading pauses that connection.

Both directions of the common case are the door's own code, for speed; the
rest is Autobahn's. Out: ``text_frames`` frames each event once for every
web session. In: ``ChatWebSocket.consumeData`` reads the frames a browser
sends for chat lines (complete, final, masked text frames within the size
limit) itself, several per read, and hands every other frame (control
frames, fragments, anything Autobahn would refuse) to Autobahn's
``processData`` at the point where it starts.
"""

from collections import deque
from functools import lru_cache

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.protocol import WebSocketProtocol
from autobahn.websocket.types import ConnectionDeny
from twisted.logger import Logger

from chatd.core.interfaces import DisconnectReason
from chatd.frontends.line.protocol import ChatProtocol, ChatServerFactory
from chatd.frontends.sendnow import sender_for
from chatd.frontends.web.proxy import client_address

SUBPROTOCOL = "chatd.v1"
# Messages past the line limit get ERR line-too-long as on the line door, up to
# this many times the limit; a longer one closes the WebSocket (1009), since
# Autobahn holds a whole message in memory before handing it over.
OVERSIZE_FACTOR = 4
# Every close the server starts is "normal": the BYE line before it says why.
CLOSE_NORMAL = 1000
_OPEN = WebSocketProtocol.STATE_OPEN
_CLOSING = WebSocketProtocol.STATE_CLOSING
# The first byte of a complete (FIN), uncompressed (no RSV bits) text frame.
_FINAL_TEXT = 0x81
# The second byte's mask bit: every client frame must have it (RFC 6455 5.3).
_MASKED = 0x80
log = Logger()


def unmask(mask: bytes, masked: bytes) -> bytes:
    """``masked`` XORed with the 4-byte ``mask`` repeated (RFC 6455 5.3), as one big-int XOR.

    Two conversions and one XOR, all in C: for a chat line several times
    cheaper than an unmasking object per frame (Autobahn's ``create_xor_masker``).
    """
    length = len(masked)
    key = (mask * ((length >> 2) + 1))[:length]
    return (int.from_bytes(masked, "little") ^ int.from_bytes(key, "little")).to_bytes(
        length, "little"
    )


@lru_cache(maxsize=64)
def text_frames(data: bytes) -> bytes:
    """One unmasked, unfragmented text frame (RFC 6455 5.2) per CRLF-ended line of ``data``.

    A server's frames are not masked, so a frame is the same bytes for every
    recipient: an event going to a thousand web sessions is framed once (the
    cache is keyed by the event's shared wire bytes), as the line door
    encodes it once. Autobahn still does the handshake, reads the client's
    frames and closes; only the writing of text messages is this.
    """
    frames = []
    for line in data.split(b"\r\n")[:-1]:
        length = len(line)
        if length < 126:
            frames.append(bytes((0x81, length)))
        elif length < 1 << 16:
            frames.append(b"\x81\x7e" + length.to_bytes(2, "big"))
        else:
            frames.append(b"\x81\x7f" + length.to_bytes(8, "big"))
        frames.append(line)
    return b"".join(frames)


class LineSocket:
    """The transport a ``WebChatProtocol`` writes to: server lines out as text messages.

    ``write`` gets whole CRLF-terminated lines (one event, or a batch of
    room messages) and sends each line, without its CRLF, as one message.
    Producer registration, pausing and closing go to the connection under
    the WebSocket; ``getPeer`` is the client's real address.
    """

    def __init__(self, websocket: "ChatWebSocket", peer) -> None:
        self._websocket = websocket
        self._peer = peer
        self.disconnecting = False
        # Frames go straight to the socket while its buffer is empty (chatd.frontends.sendnow).
        self._send = sender_for(websocket.transport)

    @property
    def _connection(self):
        return self._websocket.transport

    @property
    def transport(self):
        """The connection under the WebSocket: where keep-alive and the kernel's
        count of bytes not yet acknowledged are found (``chatd.frontends.keepalive``,
        ``chatd.frontends.limits.unsent_bytes``)."""
        return self._websocket.transport

    def write(self, data: bytes) -> None:
        """Send each CRLF-terminated line of ``data`` as one text message."""
        # Once per delivery: one attribute chain, no property call.
        if self._websocket.state == _OPEN and not self.disconnecting:
            self._send(text_frames(data))
        # Otherwise the client has started closing: what is left has nowhere to go.

    def writeSequence(self, data) -> None:
        """Write each chunk in turn."""
        for chunk in data:
            self.write(chunk)

    def registerProducer(self, producer, streaming: bool) -> None:
        """Make ``producer`` (the session's send queue) the connection's producer."""
        self._connection.registerProducer(producer, streaming)

    def unregisterProducer(self) -> None:
        """Forget the producer."""
        self._connection.unregisterProducer()

    def pauseProducing(self) -> None:
        """Read nothing more from the client for now."""
        self._connection.pauseProducing()

    def resumeProducing(self) -> None:
        """Read from the client again."""
        self._connection.resumeProducing()

    def loseConnection(self) -> None:
        """Close the WebSocket (close frame, then the connection) after what is written."""
        if not self.disconnecting:
            self.disconnecting = True
            self._websocket.sendClose(CLOSE_NORMAL)

    def abortConnection(self) -> None:
        """Drop the connection now (a client that does not read)."""
        self.disconnecting = True
        self._connection.abortConnection()

    def getPeer(self):
        """The client's address (as a trusted proxy names it, or the connection's peer)."""
        return self._peer

    def getHost(self):
        """The server's own address on this connection."""
        return self._connection.getHost()


class WebChatProtocol(ChatProtocol):
    """The line door's protocol fed whole messages: each one is exactly one line.

    A message ending in a line end has it removed (LF or CR LF); a message
    with a CR or LF anywhere else is refused with ``ERR bad-encoding`` rather
    than split, so a pasted text cannot smuggle a second command in. Messages
    that arrive while a command is running wait in order, as buffered lines
    do on the line door, and as there reading stops once more than a line's
    worth of them waits, until they are run.
    """

    def __init__(self, server: ChatServerFactory) -> None:
        super().__init__(server)
        self._messages: deque[bytes] = deque()

    def message_received(self, payload: bytes) -> None:
        """Queue one text message's payload and run what can run."""
        self.messages_received((payload,))

    def messages_received(self, payloads) -> None:
        """Queue the payloads of text messages read together, in order, and run what can run.

        One read's messages cost one look at the send queue and one run of
        the loop, as one read's lines do on the line door.
        """
        if self.output is not None:
            # The client reads what it was sent: a good moment to see what arrived.
            self.output.check_handed_over()
        if not self._closing:
            self._messages.extend(payloads)
            self.dataReceived(b"")

    def dataReceived(self, data: bytes) -> None:
        """Run waiting messages until a command holds the rest back.

        ``ChatProtocol`` calls ``dataReceived(b"")`` once the commands in
        flight are answered: this is where waiting messages resume (or, when
        that happens while a message runs, the loop below goes on).
        """
        if self._framing:
            return
        self._framing = True
        try:
            while self._messages and not self.paused and not self._closing:
                self._run_message(self._messages.popleft())
        finally:
            self._framing = False
        # As on the line door: reading stops once more than a line's worth waits
        # (each message counted with a line end, so empty ones count too); until
        # then the connection is read on, rather than stopped and restarted for
        # every commit a sender's messages wait on.
        if (
            self.paused
            and self._messages
            and not self._held_reading
            and len(self._messages) + sum(map(len, self._messages)) > self.MAX_LENGTH
        ):
            self._held_reading = True
            self._update_reading()

    def _run_message(self, payload: bytes) -> None:
        if payload.endswith(b"\n"):
            payload = payload[:-2] if payload.endswith(b"\r\n") else payload[:-1]
        if b"\n" in payload or b"\r" in payload:
            verdict = self.guard.line(len(payload) + 1)
            if verdict is not None:
                self._refuse_line(verdict)
            else:
                self._refuse("bad-encoding", "a message is one line: no CR or LF inside it")
            return
        self.lineReceived(payload)


class ChatWebSocket(WebSocketServerProtocol):
    """One WebSocket: handshake checks, then messages to and from a ``WebChatProtocol``."""

    def __init__(self) -> None:
        super().__init__()
        self.chat: WebChatProtocol | None = None
        self._peer = None
        # The largest text frame the fast reader takes (0: it is off); set in onOpen.
        self._fast_limit = 0

    def onConnect(self, request):
        """Refuse foreign origins (403) and clients not speaking ``chatd.v1`` (400)."""
        factory: ChatWebSocketFactory = self.factory
        host = request.headers.get("host")
        origin = request.headers.get("origin")
        if not factory.origins.allows(origin, host):
            log.info("web: refused origin {origin} for host {host}", origin=origin, host=host)
            raise ConnectionDeny(ConnectionDeny.FORBIDDEN, "this origin may not open the chat")
        if SUBPROTOCOL not in request.protocols:
            raise ConnectionDeny(
                ConnectionDeny.BAD_REQUEST, f"the subprotocol {SUBPROTOCOL} is required"
            )
        self._peer = client_address(
            self.transport.getPeer(),
            request.headers.get("x-forwarded-for"),
            factory.chat.config.web_trusted_proxies,
        )
        return SUBPROTOCOL

    def onOpen(self) -> None:
        """The handshake is done: the session starts, with ``HELLO``."""
        connection = self.transport
        # Twisted Web's channel is still the connection's producer: the session's send
        # queue takes its place, as on the line door.
        if getattr(connection, "producer", None) is not None or getattr(
            connection, "_producer", None
        ) is not None:
            connection.unregisterProducer()
        self._fast_limit = self._fast_reader_limit()
        self.chat = WebChatProtocol(self.factory.chat)
        self.chat.makeConnection(LineSocket(self, self._peer))

    def _fast_reader_limit(self) -> int:
        """The largest payload the fast reader may take: Autobahn's limits, under 64 KiB.

        0 (Autobahn reads every frame) when an option is on that the fast
        reader does not do as Autobahn would: no unmasking (``applyMask``
        off), frame or octet logging, timings, or Autobahn's own keep-alive
        pings (which any frame would restart).
        """
        if (
            not self.applyMask
            or self.logFrames
            or self.logOctets
            or self.trackedTimings
            or self.autoPingInterval
        ):
            return 0
        # Frames of 64 KiB and more (a 64-bit length) are left to Autobahn.
        limits = [0xFFFF, self.maxFramePayloadSize, self.maxMessagePayloadSize]
        return min(limit for limit in limits if limit > 0)

    def dataReceived(self, data: bytes) -> None:
        """Bytes from the connection, to Autobahn's buffer and then ``consumeData``.

        Autobahn's own ``dataReceived`` formats a debug message's fields on
        every read, logged or not; this is it without that.
        """
        self._dataReceived(data)

    def consumeData(self) -> None:
        """Autobahn's loop over the buffered bytes, with the fast reader at each frame start.

        While the WebSocket is open and no frame or fragmented message is
        under way, ``_read_text_frames`` takes what it can; the first frame it
        does not take is Autobahn's (``processData``), whole, and so is
        everything in any other state (the handshake, a close under way).
        """
        if self.state != _OPEN or not self._fast_limit:
            super().consumeData()
            return
        while True:
            state = self.state
            if state == _OPEN:
                if self.current_frame is None and not self.inside_message:
                    if self._read_text_frames():
                        return
                    if self.state != _OPEN:
                        # A message closed the WebSocket: Autobahn goes on, or nothing does.
                        continue
            elif state != _CLOSING:
                return
            if not self.processData():
                return

    def _read_text_frames(self) -> bool:
        """Read the complete, final, masked text frames at the start of the buffer.

        Each is the whole of one text message: it is unmasked and handed on,
        all of one read's together. Reading stops at the first frame that is
        anything else (returning False: it is Autobahn's to read) or at one
        not complete yet (returning True: wait for more bytes; Autobahn too
        would hold a text message until its end). A frame is taken only if
        it passes every check Autobahn makes of it (mask, reserved bits,
        opcode, minimal length encoding, the size limits and, when
        ``utf8validateIncoming`` is on, UTF-8), so what Autobahn refuses
        reaches Autobahn, which refuses it.
        """
        data = self.data
        size = len(data)
        limit = self._fast_limit
        validate = self.utf8validateIncoming
        payloads = []
        position = 0
        waiting = True
        while size - position >= 2:
            second = data[position + 1]
            if data[position] != _FINAL_TEXT or second < _MASKED:
                waiting = False
                break
            length = second - _MASKED
            start = position + 6
            if length == 126:
                start = position + 8
                if size < start:
                    break
                length = (data[position + 2] << 8) | data[position + 3]
                if length < 126:
                    # Not the minimal length encoding: a protocol error.
                    waiting = False
                    break
            elif length == 127:
                waiting = False
                break
            if length > limit:
                waiting = False
                break
            end = start + length
            if end > size:
                break
            payload = unmask(data[start - 4 : start], data[start:end])
            if validate:
                try:
                    payload.decode("utf-8")
                except UnicodeDecodeError:
                    waiting = False
                    break
            payloads.append(payload)
            position = end
        if position:
            self.data = data[position:]
            # Autobahn's counts, as its own reading keeps them (payload octets, not headers).
            stats = self.trafficStats
            octets = sum(map(len, payloads))
            stats.incomingOctetsWebSocketLevel += octets
            stats.incomingOctetsAppLevel += octets
            stats.incomingWebSocketFrames += len(payloads)
            stats.incomingWebSocketMessages += len(payloads)
            if self.chat is not None:
                self.chat.messages_received(payloads)
        return waiting

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        """A text message is a line; a binary one ends the session (``BYE binary-message``)."""
        if self.chat is None:
            return
        if isBinary:
            self.chat.disconnect(DisconnectReason.BINARY_MESSAGE)
            return
        self.chat.message_received(payload)

    def connectionLost(self, reason) -> None:
        """End the session, once, whatever closed the connection."""
        super().connectionLost(reason)
        chat, self.chat = self.chat, None
        if chat is not None:
            chat.transport.disconnecting = True
            chat.connectionLost(reason)


class ChatWebSocketFactory(WebSocketServerFactory):
    """Builds ``ChatWebSocket``s onto the line door's ``ChatServerFactory`` (shared limits)."""

    protocol = ChatWebSocket
    noisy = False

    def __init__(self, chat: ChatServerFactory, origins: "OriginPolicy") -> None:
        super().__init__(protocols=[SUBPROTOCOL], server="chatd")
        self.chat = chat
        self.origins = origins
        limit = chat.config.line_limit * OVERSIZE_FACTOR
        self.setProtocolOptions(
            # A request for /ws without Upgrade gets an error, not Autobahn's status page.
            webStatus=False,
            # A protocol error (an oversize message) gets a close frame with its code.
            failByDrop=False,
            maxFramePayloadSize=limit,
            maxMessagePayloadSize=limit,
            # Invalid UTF-8 is answered ERR bad-encoding by the line rules, not a close.
            utf8validateIncoming=False,
            # No permessage-deflate: its windows would cost memory per connection.
            perMessageCompressionAccept=lambda offers: None,
            # chatd's own PING keeps sessions alive, as on the line door.
            autoPingInterval=0,
        )


class OriginPolicy:
    """Which pages may open the WebSocket: ``CHATD_WEB_ORIGINS``, or the page's own origin.

    Browsers always send ``Origin`` on a WebSocket handshake, so a page on
    another site cannot use a visitor's browser to chat as them. A client
    that sends no ``Origin`` is not a browser (and could send any): it is let
    through. ``null`` (sandboxed frames, files) is refused.
    """

    def __init__(self, allowed: tuple[str, ...] | None) -> None:
        self.allowed = None if allowed is None else frozenset(allowed)

    def allows(self, origin: str | None, host: str | None) -> bool:
        """Whether a handshake with ``Origin: origin`` and ``Host: host`` may open."""
        if origin is None:
            return True
        origin = origin.strip().lower()
        if self.allowed is not None:
            return origin in self.allowed
        scheme, separator, authority = origin.partition("://")
        return (
            bool(separator)
            and scheme in ("http", "https")
            and host is not None
            and authority == host.strip().lower()
        )
