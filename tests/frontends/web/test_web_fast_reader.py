"""The web door's own reader of client frames (``ChatWebSocket.consumeData``), in memory.

The fast reader takes complete, final, masked text frames within the size
limit; every other frame is Autobahn's. Each test feeds real masked frames
(random keys) whole, byte by byte and split at every byte, and checks the
replies against fixed expectations and against the same bytes read by
Autobahn alone (the fast reader switched off on that connection): the two
readers must not differ in anything a client sees. Spying on Autobahn's
``processData`` shows which reader took which frame.
"""

import os

import pytest

from chatd.config import Config
from chatd.frontends.web.socket import ChatWebSocket, unmask
from tests.support import SlowDatabase
from tests.websupport import (
    CLOSE,
    PING,
    PONG,
    TEXT,
    FakeConnection,
    WebClient,
    WebHarness,
    client_frame,
    handshake,
)

CONTINUATION = 0x0
LINE_LIMIT = 100
# Autobahn's frame and message limit on the web door: four times the line limit.
FRAME_LIMIT = 4 * LINE_LIMIT


def web(**settings) -> WebHarness:
    """A harness with a line limit of 100 (frames up to 400 bytes) and no rate limit."""
    settings.setdefault("rate_limit", None)
    settings.setdefault("line_limit", LINE_LIMIT)
    return WebHarness(Config(bcrypt_rounds=4, **settings))


def opened(harness: WebHarness, fast: bool = True) -> WebClient:
    """An open client; with ``fast=False`` its frames are all read by Autobahn."""
    client = harness.opened()
    if not fast:
        client.protocol._fast_limit = 0
    return client


def feed(client: WebClient, data: bytes, chunks: str) -> list[tuple[int, bytes]]:
    """Hand ``data`` to the server whole (``"whole"``) or one byte per read (``"bytes"``);
    return the frames the server wrote."""
    pieces = [data] if chunks == "whole" else [data[i : i + 1] for i in range(len(data))]
    for piece in pieces:
        client.send_frame(piece)
    return client.frames()


def close_code(frames) -> int | None:
    """The status code of the close frame among ``frames``, or None."""
    for opcode, payload in frames:
        if opcode == CLOSE:
            return int.from_bytes(payload[:2], "big")
    return None


@pytest.fixture
def autobahn_reads(monkeypatch) -> list[int]:
    """Count the calls of Autobahn's own frame reader (``processData``)."""
    calls = []
    original = ChatWebSocket.processData

    def counted(self):
        calls.append(1)
        return original(self)

    monkeypatch.setattr(ChatWebSocket, "processData", counted)
    return calls


def unmasked_frame(payload: bytes, opcode: int = TEXT) -> bytes:
    """A client frame without a mask (which clients must never send)."""
    return bytes((0x80 | opcode, len(payload))) + payload


# --- unmasking ----------------------------------------------------------------------


@pytest.mark.parametrize("length", [0, 1, 2, 3, 4, 5, 7, 8, 9, 125, 126, 400, 65535])
def test_unmask_is_the_xor_with_the_repeated_key(length):
    """Every length, whatever its remainder by four, against the RFC's byte-by-byte XOR."""
    mask, data = os.urandom(4), os.urandom(length)
    expected = bytes(byte ^ mask[index % 4] for index, byte in enumerate(data))
    assert unmask(mask, data) == expected
    assert unmask(mask, expected) == data


def test_unmask_keeps_leading_and_trailing_zero_bytes():
    """The big-int XOR must not lose zero bytes at either end."""
    assert unmask(b"\x00\x00\x00\x00", b"\x00abc\x00") == b"\x00abc\x00"
    assert unmask(b"\x01\x01\x01\x01", b"\x01\x01") == b"\x00\x00"


# --- what the fast reader takes -----------------------------------------------------

PINGS = [f"/ping {number}".encode() for number in range(5)]
REPLIES = [(TEXT, b"OK " + line[1:]) for line in PINGS]


@pytest.mark.parametrize("chunks", ["whole", "bytes"])
def test_text_frames_are_read_without_autobahn_whole_and_byte_by_byte(chunks, autobahn_reads):
    """Several text messages in one read, or spread over one read per byte: each is
    answered once and in order, and Autobahn's reader is never called."""
    client = opened(web())
    stream = b"".join(client_frame(line) for line in PINGS)
    assert feed(client, stream, chunks) == REPLIES
    assert autobahn_reads == []


def test_a_frame_with_a_16_bit_length_is_read_fast(autobahn_reads):
    """126 bytes and more (the two-byte length), up to the limit, take the fast way too."""
    client = opened(web(line_limit=300))
    line = b"/ping " + b"x" * 200
    assert feed(client, client_frame(line), "bytes") == [(TEXT, b"OK " + line[1:])]
    assert autobahn_reads == []


def test_frames_arriving_with_the_handshake_are_answered():
    """Frames sent right behind the handshake, in the same read, are run once open."""
    harness = web()
    frames = b"".join(client_frame(line) for line in PINGS[:2])
    client = WebClient(harness, FakeConnection(), handshake() + frames)
    assert client.status == 101
    assert client.lines()[1:] == ["OK ping 0", "OK ping 1"]


# Control frames, a fragmented message (with a ping inside it), a message with a
# 16-bit length, invalid UTF-8 (the line rules answer it), an empty message and a
# line break inside a message, between fast frames: every kind of frame in turn.
MIXED = [
    client_frame(b"/ping one"),
    client_frame(b"are you there", opcode=PING),
    client_frame(b"/ping fr", final=False),
    client_frame(b"ag", opcode=CONTINUATION, final=False),
    client_frame(b"still here", opcode=PING),
    client_frame(b"ment", opcode=CONTINUATION),
    client_frame(b"/ping " + b"y" * 150),
    client_frame(b"/ping \xff\xfe"),
    client_frame(b""),
    client_frame(b"/ping a\nb"),
    client_frame(b"/ping two"),
]
MIXED_REPLIES = [
    (TEXT, b"OK ping one"),
    (PONG, b"are you there"),
    (PONG, b"still here"),
    (TEXT, b"OK ping fragment"),
    (TEXT, b"OK ping " + b"y" * 150),
    (TEXT, b"ERR bad-encoding lines must be UTF-8"),
    (TEXT, b"ERR bad-encoding a message is one line: no CR or LF inside it"),
    (TEXT, b"OK ping two"),
]


@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("chunks", ["whole", "bytes"])
def test_mixed_frames_get_the_same_replies_from_both_readers(fast, chunks):
    """Fast and Autobahn-only reading answer the mixed stream identically, whole or per byte."""
    client = opened(web(line_limit=200), fast=fast)
    assert feed(client, b"".join(MIXED), chunks) == MIXED_REPLIES


def test_mixed_frames_split_at_every_byte_get_the_same_replies(autobahn_reads):
    """The stream in two reads, cut at each of its bytes in turn: the same replies every
    time (one connection throughout, so no state is left over between rounds either)."""
    client = opened(web(line_limit=200))
    stream = b"".join(MIXED)
    for cut in range(1, len(stream)):
        client.send_frame(stream[:cut])
        client.send_frame(stream[cut:])
        assert client.frames() == MIXED_REPLIES, cut
    # The control and fragment frames went to Autobahn, the rest did not.
    assert autobahn_reads


def test_a_command_waiting_on_the_database_holds_the_messages_read_with_it():
    """Messages of one read behind a command waiting on a commit run after it, in order."""
    database = SlowDatabase()
    harness = WebHarness(Config(bcrypt_rounds=4, rate_limit=None), database=database)
    alice = opened(harness)
    alice.login("alice")
    database.holding = True
    alice.send_frame(b"".join(client_frame(line) for line in [b"/join #new", *PINGS[:2]]))
    assert alice.lines() == []
    database.holding = False
    harness.commit_held()
    assert alice.lines()[-3:] == ["OK join #new", "OK ping 0", "OK ping 1"]


@pytest.mark.parametrize("fast", [True, False])
def test_a_quit_in_the_middle_of_a_read_ends_it_there(fast):
    """``/quit`` with more messages in the same read: nothing after it is run, and
    both readers close the same way."""
    client = opened(web(), fast=fast)
    stream = client_frame(b"/ping a") + client_frame(b"/quit") + client_frame(b"/ping b")
    frames = feed(client, stream, "whole")
    assert frames[:3] == [(TEXT, b"OK ping a"), (TEXT, b"OK quit"), (TEXT, b"BYE quit")]
    assert close_code(frames) == 1000
    assert (TEXT, b"OK ping b") not in frames


# --- what the fast reader leaves to Autobahn, which refuses it ----------------------


@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("chunks", ["whole", "bytes"])
def test_an_unmasked_frame_is_refused_with_1002(fast, chunks):
    """A client frame without a mask closes with 1002 (protocol error) and is not run;
    the message before it in the same read is answered."""
    client = opened(web(), fast=fast)
    stream = client_frame(b"/ping before") + unmasked_frame(b"/ping unmasked")
    frames = feed(client, stream, chunks)
    assert frames[0] == (TEXT, b"OK ping before")
    assert close_code(frames) == 1002
    assert not any(b"unmasked" in payload for opcode, payload in frames if opcode == TEXT)


@pytest.mark.parametrize("fast", [True, False])
def test_reserved_bits_and_a_non_minimal_length_are_refused_with_1002(fast):
    """RSV bits without an extension, and a 16-bit length under 126: protocol errors."""
    for bad in (
        bytes((0xC1,)) + client_frame(b"/ping rsv")[1:],
        bytes((0x81, 0x80 | 126, 0, 9)) + b"\x00\x00\x00\x00" + b"/ping len",
    ):
        client = opened(web(), fast=fast)
        frames = feed(client, bad, "whole")
        assert close_code(frames) == 1002 and len(frames) == 1, frames


@pytest.mark.parametrize("chunks", ["whole", "bytes"])
def test_a_frame_at_the_size_limit_is_read_fast_and_one_byte_more_closes_1009(
    chunks, autobahn_reads
):
    """400 bytes (4x the line limit) is a message, refused by the line rules; 401 closes
    with 1009 (too big), as soon as the header says so."""
    client = opened(web())
    frames = feed(client, client_frame(b"x" * FRAME_LIMIT), chunks)
    assert frames == [(TEXT, b"ERR line-too-long lines are limited to 100 bytes")]
    assert autobahn_reads == []
    over = client_frame(b"x" * (FRAME_LIMIT + 1))
    frames = feed(client, over, chunks)
    assert close_code(frames) == 1009
    assert autobahn_reads


def test_a_frame_past_the_limit_closes_before_its_payload_arrives():
    """Its header is enough: the server does not wait for (or hold) an oversize payload."""
    client = opened(web())
    over = client_frame(b"x" * (FRAME_LIMIT + 1))
    frames = feed(client, over[:8], "whole")
    assert close_code(frames) == 1009


def test_a_64_bit_length_is_autobahns(autobahn_reads):
    """A frame with the 8-byte length (64 KiB and more) is never the fast reader's."""
    client = opened(web())
    frames = feed(client, bytes((0x81, 0x80 | 127)) + (70000).to_bytes(8, "big") + b"mask", "whole")
    assert close_code(frames) == 1009
    assert autobahn_reads


@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("chunks", ["whole", "bytes"])
def test_invalid_utf8_closes_1007_when_autobahn_validates(fast, chunks):
    """With Autobahn's UTF-8 validation on, the fast reader validates too: an invalid
    text message is left to Autobahn, which closes 1007; the valid one before it runs."""
    harness = web()
    harness.factory_web.setProtocolOptions(utf8validateIncoming=True)
    client = opened(harness, fast=fast)
    stream = client_frame(b"/ping ok") + client_frame(b"/ping \xc3")
    frames = feed(client, stream, chunks)
    assert frames[0] == (TEXT, b"OK ping ok")
    assert close_code(frames) == 1007
    assert len(frames) == 2


def test_the_fast_reader_is_off_when_autobahn_logs_frames():
    """Options the fast reader does not honour (frame logging, timings, Autobahn's
    pings, no unmasking) leave every frame to Autobahn."""
    harness = web()
    assert harness.opened().protocol._fast_limit == FRAME_LIMIT
    harness.factory_web.logFrames = True
    client = harness.opened()
    assert client.protocol._fast_limit == 0
    assert client.send("/ping logged") == ["OK ping logged"]


def test_the_fast_limit_is_below_the_64_bit_lengths():
    """With limits of 64 KiB or none, the fast reader still stops at 65,535 bytes."""
    harness = web()
    harness.factory_web.setProtocolOptions(maxFramePayloadSize=0, maxMessagePayloadSize=1 << 20)
    assert harness.opened().protocol._fast_limit == 0xFFFF


@pytest.mark.parametrize("fast", [True, False])
def test_nothing_more_is_read_once_a_message_drops_the_connection(fast):
    """A message whose handling drops the connection (as a send queue past its hard
    limit does): the frames read with it are not answered, by either reader."""
    client = opened(web(), fast=fast)
    chat = client.protocol.chat

    def dropping(payloads):
        client.connection.abortConnection()

    chat.messages_received = dropping
    chat.message_received = lambda payload: dropping((payload,))
    stream = client_frame(b"/ping drop") + client_frame(b"are you there", opcode=PING)
    assert feed(client, stream, "whole") == []
    assert client.connection.aborted
