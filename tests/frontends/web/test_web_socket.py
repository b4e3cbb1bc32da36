"""The web door's WebSocket, in memory: the line door's rules, one text message per line.

Each test drives Autobahn's server protocol over an in-memory connection
(``tests/websupport.py``) on a ``ChatHarness``: real handshake bytes, real
masked frames, the real ``ChatProtocol`` behind them, a ``task.Clock``.
"""

import pytest
from twisted.internet.address import IPv4Address

from chatd.config import Config, _networks
from chatd.core.events import RoomMessage, RoomMessages
from chatd.core.interfaces import DisconnectReason
from chatd.frontends.web.proxy import client_address
from chatd.frontends.web.socket import OriginPolicy, text_frames
from tests.support import SlowDatabase
from tests.websupport import BINARY, CLOSE, PING, PONG, WebHarness, client_frame


def web(**settings) -> WebHarness:
    """A harness with the given settings (rate limit off unless given)."""
    settings.setdefault("rate_limit", None)
    return WebHarness(Config(bcrypt_rounds=4, **settings))


def close_code(frames) -> int:
    """The status code of the close frame among ``frames``."""
    payload = next(payload for opcode, payload in frames if opcode == CLOSE)
    return int.from_bytes(payload[:2], "big")


# --- the handshake ------------------------------------------------------------


def test_the_handshake_agrees_on_chatd_v1_and_the_server_says_hello():
    """101 with ``Sec-WebSocket-Protocol: chatd.v1``, then HELLO as the first message."""
    client = web().web_client()
    assert client.status == 101
    assert b"Sec-WebSocket-Protocol: chatd.v1\r\n" in client.response
    assert client.lines() == ["HELLO chatd 1 welcome; /help lists commands"]


def test_a_page_from_another_origin_is_refused_with_403():
    """Origin other than the page's own (scheme://Host) gets 403 and no session."""
    harness = web()
    client = harness.web_client(origin="https://evil.test", host="chat.test")
    assert client.status == 403
    assert harness.factory.connections == set()


@pytest.mark.parametrize(
    "origin", ["http://chat.test.evil.test", "http://chat.test:81", "ftp://chat.test"]
)
def test_near_misses_of_the_own_origin_are_refused(origin):
    """Only the exact host (and port) of the page counts as its own origin."""
    assert web().web_client(origin=origin, host="chat.test").status == 403


@pytest.mark.parametrize("origin", ["null", "chat.test"])
def test_malformed_origins_are_refused(origin):
    """``null`` (sandboxed frames, files) and non-URLs are refused before any session."""
    harness = web()
    assert harness.web_client(origin=origin, host="chat.test").status in (400, 403)
    assert harness.factory.connections == set()


def test_the_own_origin_is_allowed_in_any_case_and_with_its_port():
    """Host and origin compare case-insensitively, ports included, http or https."""
    harness = web()
    assert harness.web_client(origin="HTTP://Chat.Test:8080", host="chat.test:8080").status == 101
    assert harness.web_client(origin="https://chat.test", host="chat.test").status == 101


def test_configured_origins_replace_the_own_origin():
    """With CHATD_WEB_ORIGINS only the listed origins may open it, the page's own too."""
    harness = web(web_origins=("https://chat.example.com",))
    assert harness.web_client(origin="https://chat.example.com", host="10.0.0.5:8080").status == 101
    assert harness.web_client(origin="http://10.0.0.5:8080", host="10.0.0.5:8080").status == 403


def test_a_client_without_origin_is_not_a_browser_and_may_connect():
    """No Origin header: a script or a tool, which could send any; let through."""
    assert web().web_client(origin=None).status == 101


def test_a_client_not_asking_for_chatd_v1_is_refused_with_400():
    """The subprotocol is required: a future chatd.v2 must never be mistaken for v1."""
    harness = web()
    assert harness.web_client(protocols=None).status == 400
    assert harness.web_client(protocols="chat, superchat").status == 400
    assert harness.web_client(protocols="other, chatd.v1").status == 101


def test_compression_offers_are_declined():
    """permessage-deflate is never agreed: its windows would cost memory per connection."""
    client = web().web_client(
        extra={"Sec-WebSocket-Extensions": "permessage-deflate; client_max_window_bits"}
    )
    assert client.status == 101
    assert b"sec-websocket-extensions" not in client.response.lower()


# --- one message, one line ----------------------------------------------------


def test_every_server_line_is_one_text_message_without_its_line_end():
    """Login and chat: each line its own message, no CR LF inside any."""
    harness = web()
    alice = harness.opened()
    assert alice.login("alice") == ["JOIN #lobby alice", "WHO #lobby alice", "OK login alice"]
    assert alice.send("hello there") == ["MSG #lobby alice hello there", "OK say #lobby"]


def test_a_batch_of_room_messages_is_one_message_per_line():
    """Messages committed together reach a web session as one text message each."""
    harness = web()
    alice = harness.opened()
    alice.login("alice")
    batch = RoomMessages(
        tuple(RoomMessage("#lobby", "bob", f"number {n}", 0) for n in range(3))
    )
    alice.protocol.chat.deliver(batch)
    assert alice.lines() == [f"MSG #lobby bob number {n}" for n in range(3)]


def test_web_and_line_sessions_share_the_rooms():
    """A web user and a line user talk both ways in #lobby."""
    harness = web()
    alice = harness.opened()
    alice.login("alice")
    bob = harness.logged_in("bob")
    assert alice.lines() == ["JOIN #lobby bob"]
    bob.send("hi from nc")
    assert alice.lines() == ["MSG #lobby bob hi from nc"]
    alice.send("hi from the web")
    assert bob.lines()[-1] == "MSG #lobby alice hi from the web"


def test_a_room_mode_change_reaches_a_web_member_as_its_mode_line():
    """A line-door operator's /moderated-like switches (here /private and /ban) reach a web
    member of the room as MODE extension lines, one text message each."""
    harness = web()
    alice = harness.opened()
    alice.login("alice")
    bob = harness.logged_in("bob")
    harness.logged_in("dave").close()
    bob.send("/join #dev")
    alice.send("/join #dev")
    alice.lines()
    assert bob.send("/private #dev on")[-1] == "OK private #dev"
    assert bob.send("/ban #dev dave")[-1] == "OK ban #dev"
    assert alice.lines() == ["MODE #dev bob private on", "MODE #dev bob ban on dave"]


def test_a_line_end_at_the_end_of_a_message_is_dropped():
    """``text\\n`` and ``text\\r\\n`` are the line ``text``, as on the line door."""
    alice = web().opened()
    assert alice.send("/ping a\n", "/ping b\r\n") == ["OK ping a", "OK ping b"]


def test_a_message_holding_a_line_break_is_refused_whole():
    """CR or LF inside a message is ERR bad-encoding: never two commands from one message."""
    alice = web().opened()
    alice.login("alice")
    refusal = "ERR bad-encoding a message is one line: no CR or LF inside it"
    assert alice.send("hello\n/quit") == [refusal]
    assert alice.send("a\rb") == [refusal]
    assert alice.send("/ping still") == ["OK ping still"]


def test_an_empty_message_gets_no_reply():
    """An empty message is an empty line: ignored, like on the line door."""
    alice = web().opened()
    assert alice.send("", "/ping x") == ["OK ping x"]


def test_invalid_utf8_is_answered_bad_encoding_and_the_session_stays():
    """The line rules answer it (Autobahn's close on bad UTF-8 is off)."""
    alice = web().opened()
    assert alice.send(b"/ping \xff\xfe") == ["ERR bad-encoding lines must be UTF-8"]
    assert alice.send("/ping ok") == ["OK ping ok"]


def test_a_message_at_the_line_limit_runs_and_one_byte_more_is_refused():
    """The line limit applies to messages, at and past its edge, and the session stays."""
    alice = web(line_limit=100).opened()
    at_limit = "/ping " + "x" * 94
    assert alice.send(at_limit) == ["OK ping " + "x" * 94]
    assert alice.send(at_limit + "x") == ["ERR line-too-long lines are limited to 100 bytes"]
    assert alice.send("/ping after") == ["OK ping after"]


def test_a_message_past_four_times_the_limit_closes_with_1009():
    """Autobahn holds a whole message in memory: past 4x the line limit it closes (too big)."""
    harness = web(line_limit=100)
    alice = harness.opened()
    alice.send_frame(client_frame(b"x" * 400))
    assert alice.lines() == ["ERR line-too-long lines are limited to 100 bytes"]
    alice.send_frame(client_frame(b"x" * 401))
    assert close_code(alice.frames()) == 1009
    alice.send_frame(client_frame(b"\x03\xf1", opcode=CLOSE))
    assert alice.connection.closed
    assert harness.factory.connections == set()


def test_a_binary_message_ends_the_session_with_bye():
    """Only text is spoken: a binary message gets ``BYE binary-message``, then a close."""
    harness = web()
    alice = harness.opened()
    alice.send_frame(client_frame(b"\x00\x01", opcode=BINARY))
    frames = alice.frames()
    assert frames[0] == (1, b"BYE binary-message")
    assert close_code(frames) == 1000


def test_a_fragmented_message_is_one_line():
    """Continuation frames make one message, hence one line."""
    alice = web().opened()
    alice.send_frame(client_frame(b"/ping fr", final=False) + client_frame(b"agment", opcode=0))
    assert alice.lines() == ["OK ping fragment"]


def test_websocket_pings_are_answered_by_autobahn():
    """A WebSocket-level ping gets its pong; it is not a line."""
    alice = web().opened()
    alice.send_frame(client_frame(b"are you there", opcode=PING))
    assert alice.frames() == [(PONG, b"are you there")]


# --- the line door's rules ------------------------------------------------------


def test_replies_keep_the_order_of_messages_while_a_commit_waits():
    """Messages sent while a command waits on the database are answered after it, in order."""
    database = SlowDatabase()
    harness = WebHarness(Config(bcrypt_rounds=4, rate_limit=None), database=database)
    alice = harness.opened()
    alice.login("alice")
    database.holding = True
    alice.send_frame(client_frame(b"/join #new"))
    alice.send_frame(client_frame(b"/ping after"))
    assert alice.lines() == []
    database.holding = False
    harness.commit_held()
    lines = alice.lines()
    assert lines[-2:] == ["OK join #new", "OK ping after"], lines


def test_reading_stops_only_once_more_than_a_line_waits_behind_a_command():
    """Behind a command waiting on a commit, messages wait and the connection is read on
    until more than a line's worth waits (the line limit + 1, each message counted with
    a line end, an empty one too), as on the line door; after the commit it is read
    again and every message is answered in order."""
    database = SlowDatabase()
    config = Config(bcrypt_rounds=4, rate_limit=None, line_limit=100)
    harness = WebHarness(config, database=database)
    alice = harness.opened()
    alice.login("alice")
    database.holding = True
    # /join waits on its commit, and what comes after it waits to run: "/ping 0" and
    # `rest` are 7 + 1 and 92 + 1 bytes, exactly the limit.
    rest = b"/ping " + b"x" * 86
    alice.send_frame(client_frame(b"/join #new") + client_frame(b"/ping 0") + client_frame(rest))
    assert alice.connection.producerState == "producing"
    alice.send_frame(client_frame(b""))
    assert alice.connection.producerState == "paused"
    database.holding = False
    harness.commit_held()
    assert alice.connection.producerState == "producing"
    assert alice.lines()[-3:] == ["OK join #new", "OK ping 0", "OK " + rest[1:].decode()]


def test_the_rate_limit_applies_to_messages():
    """Past the burst: ``ERR rate-limited``; the session stays."""
    harness = web(rate_limit=Config().rate_limit.__class__(1.0, 2))
    alice = harness.opened()
    replies = alice.send("/ping 1", "/ping 2", "/ping 3")
    assert replies[:2] == ["OK ping 1", "OK ping 2"]
    assert replies[2].startswith("ERR rate-limited ")


def test_a_flood_of_refused_lines_ends_with_bye_flood():
    """The flood cut-off of the line door: ``BYE flood`` and the socket closes."""
    harness = web(rate_limit=Config().rate_limit.__class__(1.0, 1), flood_limit=2)
    alice = harness.opened()
    for number in range(5):
        alice.send_frame(client_frame(f"/ping {number}".encode()))
    frames = alice.frames()
    assert (1, b"BYE flood") in frames
    assert close_code(frames) == 1000


def test_keepalive_ping_and_idle_timeout_apply():
    """A silent logged-in web session that answers PINGs (the page says so with a /pong
    when it connects) gets ``PING``; unanswered, ``BYE idle-timeout``."""
    harness = web(ping_interval_seconds=10.0, pong_timeout_seconds=5.0)
    alice = harness.opened()
    assert alice.send("/pong page") == ["OK pong page"]
    alice.login("alice")
    harness.clock.advance(10)
    (ping,) = alice.lines()
    assert ping.startswith("PING ")
    harness.clock.advance(5)
    frames = alice.frames()
    assert frames[0] == (1, b"BYE idle-timeout")


def test_the_send_queue_is_the_connections_producer_and_overflow_drops():
    """A web client that does not read is cut off past the hard limit, like a line one."""
    harness = web(send_queue_soft=1024, send_queue_limit=4096)
    alice = harness.opened()
    alice.login("alice")
    bob = harness.logged_in("bob")
    assert alice.connection.producer is alice.protocol.chat.output
    alice.connection.producer.pauseProducing()
    while not alice.connection.aborted:
        bob.send("y" * 200)
        harness.clock.advance(0)
    assert harness.factory.connections == {bob.protocol}


def test_a_slow_web_reader_stops_being_read():
    """Past the soft limit the connection under the WebSocket is paused for reading."""
    harness = web(send_queue_soft=1024, send_queue_limit=1 << 20)
    alice = harness.opened()
    alice.login("alice")
    bob = harness.logged_in("bob")
    alice.connection.producer.pauseProducing()
    while alice.connection.producerState != "paused":
        bob.send("y" * 200)
    alice.connection.producer.resumeProducing()
    assert alice.connection.producerState == "producing"


def test_connections_count_per_address_across_both_doors():
    """The per-address connection limit counts web and line connections together."""
    harness = web(max_connections_per_address=2)
    harness.client()
    harness.opened()
    third = harness.web_client()
    assert (1, b"BYE too-many-connections") in third.frames()


def test_logins_are_throttled_by_address_on_the_web_door():
    """Failed web logins lock the address out, as on the line door."""
    harness = web(login_failures_per_address=2)
    mallory = harness.opened()
    harness.opened().login("alice")
    for _ in range(2):
        assert mallory.send("/login alice wrongpassword")[-1].startswith("ERR bad-credentials")
    assert mallory.send("/login alice password1")[-1].startswith("ERR too-many-attempts")


def test_shutdown_says_bye_to_web_sessions():
    """``disconnect_all`` (the server's stop) reaches web sessions: BYE shutdown, close."""
    harness = web()
    alice = harness.opened()
    closed = harness.factory.disconnect_all(DisconnectReason.SHUTDOWN)
    frames = alice.frames()
    assert frames[0] == (1, b"BYE shutdown")
    assert close_code(frames) == 1000
    alice.send_frame(client_frame(b"", opcode=CLOSE))
    assert closed.called


def test_a_client_closing_first_gets_nothing_more():
    """Events for a session whose client sent a close frame are dropped, not raised."""
    harness = web()
    alice = harness.opened()
    alice.login("alice")
    alice.send_frame(client_frame(b"\x03\xe8", opcode=CLOSE))
    bob = harness.logged_in("bob")
    bob.send("anyone?")
    assert harness.factory.connections == {bob.protocol}


# --- the client's real address ----------------------------------------------------


PROXY = _networks("127.0.0.1, 10.0.0.0/8")


def peer(host: str) -> IPv4Address:
    return IPv4Address("TCP", host, 5000)


def test_forwarded_for_is_ignored_from_an_untrusted_peer():
    """A client cannot name its own address."""
    assert client_address(peer("192.0.2.7"), "203.0.113.9", PROXY) == peer("192.0.2.7")


def test_forwarded_for_is_ignored_when_no_proxy_is_trusted():
    """The default trusts nobody."""
    assert client_address(peer("127.0.0.1"), "203.0.113.9", ()) == peer("127.0.0.1")


def test_a_trusted_proxy_names_the_client():
    """The rightmost address that is not a trusted proxy is the client."""
    found = client_address(peer("127.0.0.1"), "198.51.100.1, 203.0.113.9, 10.1.2.3", PROXY)
    assert found.host == "203.0.113.9"


def test_what_the_client_wrote_left_of_it_is_ignored():
    """A forged leftmost entry does not move the client's address."""
    found = client_address(peer("10.0.0.1"), "1.2.3.4, 203.0.113.9", PROXY)
    assert found.host == "203.0.113.9"


def test_garbage_stops_the_walk_at_the_last_believed_address():
    """An entry that is no address ends the walk; the address right of it is the client."""
    assert client_address(peer("127.0.0.1"), "junk", PROXY) == peer("127.0.0.1")
    assert client_address(peer("127.0.0.1"), "junk, 10.9.9.9", PROXY).host == "10.9.9.9"


def test_ipv6_and_ports_in_forwarded_for():
    """``[v6]:port`` and ``v4:port`` forms are read as their addresses."""
    assert client_address(peer("127.0.0.1"), "[2001:db8::1]:4711", PROXY).host == "2001:db8::1"
    assert client_address(peer("127.0.0.1"), "192.0.2.1:80", PROXY).host == "192.0.2.1"


def test_login_throttle_counts_the_forwarded_address():
    """Behind a trusted proxy, one client's failures lock out that client, not the proxy."""
    harness = web(login_failures_per_address=1, web_trusted_proxies=PROXY)
    mallory = harness.opened(extra={"X-Forwarded-For": "203.0.113.9"})
    assert mallory.protocol.chat.address == "203.0.113.9"
    mallory.send("/login alice wrongpassword")
    assert mallory.send("/login alice password1")[-1].startswith("ERR too-many-attempts")
    alice = harness.opened(extra={"X-Forwarded-For": "198.51.100.4"})
    assert alice.protocol.chat.address == "198.51.100.4"


def test_the_own_origin_policy_needs_a_host():
    """Without a Host header there is no page origin to match."""
    assert not OriginPolicy(None).allows("http://chat.test", None)
    assert OriginPolicy(None).allows(None, None)


# --- framing ----------------------------------------------------------------------


@pytest.mark.parametrize("length", [0, 125, 126, 65535, 65536])
def test_text_frames_at_each_length_encoding_edge(length):
    """7-bit, 16-bit and 64-bit payload lengths, each at its edge, parse back."""
    from tests.websupport import TEXT, parse_frames

    line = b"x" * length
    frames, rest = parse_frames(text_frames(line + b"\r\n" + b"second\r\n"))
    assert frames == [(TEXT, line), (TEXT, b"second")] and rest == b""


def test_one_event_is_framed_once_for_every_recipient():
    """The frame bytes are shared: many web sessions in a room cost one framing per event."""
    harness = web()
    clients = [harness.opened() for _ in range(3)]
    for number, client in enumerate(clients):
        client.login(f"user{number}")
    text_frames.cache_clear()
    clients[0].send("hello all")
    info = text_frames.cache_info()
    assert info.misses == 2 and info.hits == 2, info  # the MSG for three, and one OK
