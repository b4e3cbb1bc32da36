"""The load generator's WebSocket mode (``--websocket``, compare target ``web``).

Like tests/test_bench.py: tiny numbers and bounded time; these check that the
web door can be measured, never how fast anything was.
"""

import asyncio

import pytest

from tests.serverproc import ServerProcess
from tests.test_bench import bench, run_bench
from tests.test_web_e2e import WEB_LISTENING
from tests.websupport import parse_frames


class Written:
    """A transport that keeps what is written."""

    def __init__(self) -> None:
        self.data = b""

    def write(self, data: bytes) -> None:
        self.data += data

    def close(self) -> None:
        pass


def test_the_websocket_client_reads_frames_however_reads_split_them():
    """Handshake, then 7-bit and 16-bit frames, fed a byte at a time: the same lines."""

    async def scenario():
        client = bench.WebSocketBenchClient("chatd")
        client.connection_made(Written())
        long_text = b"MSG #bench alice " + b"y" * 200
        data = (
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n"
            + bytes((0x81, 5)) + b"HELLO"
            + bytes((0x81, 126)) + len(long_text).to_bytes(2, "big") + long_text
        )
        for index in range(len(data)):
            client.data_received(data[index : index + 1])
        return await client.first_line, list(client.events)

    first, events = asyncio.run(scenario())
    assert first == "HELLO"
    assert events == ["MSG #bench alice " + "y" * 200]


def test_the_websocket_client_asks_for_chatd_v1_and_masks_its_lines():
    """The handshake names the subprotocol; each line is one masked text frame."""

    async def scenario():
        client = bench.WebSocketBenchClient("chatd")
        transport = Written()
        client.connection_made(transport)
        handshake = transport.data
        transport.data = b""
        client.send("/ping x")
        return handshake, transport.data, client.frame_line(b"probe\r\n")

    handshake, frame, probe = asyncio.run(scenario())
    assert b"GET /ws HTTP/1.1\r\n" in handshake
    assert b"Sec-WebSocket-Protocol: chatd.v1\r\n" in handshake
    assert frame[0] == 0x81 and frame[1] & 0x80, "a client's frames are masked"
    assert frame[6:] == b"/ping x"
    assert probe == bytes((0x81, 0x80 | 5)) + b"\x00" * 4 + b"probe"
    assert parse_frames(bytes((0x81, 2)) + b"ok")[0] == [(1, b"ok")]


def test_summary_shows_web_against_chatd():
    """With the web target the table has a web column and a web/chatd ratio."""
    records = [
        {"label": "maxrate-100", "scenario": "maxrate", "target": target, "run": 1,
         "max_deliveries_per_s": value}
        for target, value in (("baseline", 100.0), ("chatd", 200.0), ("web", 150.0))
    ]
    table = bench.summarize(records)
    assert "| metric | baseline | chatd | web | chatd/baseline | web/chatd |" in table
    assert "| max deliveries/s | 100 | 200 | 150 | 2.00x | 0.75x |" in table


@pytest.fixture
def web_door(tmp_path):
    """The real server with the web door on a loopback port: (server, web port)."""
    server = ServerProcess(tmp_path, env={"CHATD_WEB_LISTEN": "tcp:0:interface=127.0.0.1"})
    server.start()
    port = int(server.wait_for(WEB_LISTENING).group(1))
    yield server, port
    server.stop()


def test_smoke_fanout_through_the_web_door(web_door):
    """Logged-in WebSocket clients in one room receive every message, latency measured."""
    server, port = web_door
    record = run_bench("fanout", "--dialect", "chatd", "--websocket", "--port", str(port),
                       "--server-pid", str(server.pid), "--clients", "4", "--senders", "2",
                       "--rate", "50", "--duration", "0.4", "--time-limit", "60")
    assert record["delivered"] == record["expected"] == 80
    assert record["latency_ms"]["p99"] is not None


def test_smoke_maxrate_through_the_web_door(web_door):
    """The rate ladder runs over WebSocket and reports a maximum."""
    _, port = web_door
    record = run_bench("maxrate", "--dialect", "chatd", "--websocket", "--port", str(port),
                       "--clients", "4", "--senders", "2", "--start-rate", "50",
                       "--factor", "2", "--max-steps", "2", "--refine", "1",
                       "--duration", "0.3", "--grace", "1", "--quiet", "2",
                       "--time-limit", "60")
    assert record["max_deliveries_per_s"] > 0
