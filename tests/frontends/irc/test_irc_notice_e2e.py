"""NOTICE, PART reasons and TAGMSG on the real server: twistd, IRC clients and a
line-protocol client in one room, over real sockets."""

import pytest

from tests.frontends.irc.support import IRCSocketClient
from tests.serverproc import LineClient, ServerProcess


@pytest.fixture
def server(tmp_path):
    """The real ``twistd -ny chatd.tac`` with its IRC door on a loopback port."""
    process = ServerProcess(tmp_path).start()
    yield process
    process.stop()


def irc_login(server, name: str, caps: str) -> IRCSocketClient:
    """An IRC client logged in with PASS and ``caps``, read up to its #lobby NAMES."""
    client = IRCSocketClient(server.irc_port)
    client.send("CAP LS 302", f"CAP REQ :{caps}")
    client.send("PASS password1", f"NICK {name}", f"USER {name} 0 * :{name}", "CAP END")
    client.until(lambda m: m.verb == "366")
    return client


def test_notice_part_reason_and_tagmsg_between_irc_and_the_line_door(server):
    """alice (IRC) sends a NOTICE, a TAGMSG and parts with a reason; carol (IRC) sees
    NOTICE, TAGMSG and the reason; bob (line door) sees MSG and PART, never the TAGMSG.
    bob's PART reaches the IRC clients; the notice is replayed as NOTICE and HISTORY."""
    bob = LineClient(server.port)
    bob.login("bob")
    for name in ("alice", "carol"):
        LineClient(server.port).command(f"/register {name} password1")
    caps = "message-tags server-time echo-message batch"
    alice = irc_login(server, "alice", caps)
    carol = irc_login(server, "carol", caps)
    bob.until(lambda line: line == "JOIN #lobby carol")
    alice.send("NOTICE #lobby :deploy starts now")
    echo = alice.until(lambda m: m.verb == "NOTICE" and m.params[0] == "#lobby")
    assert echo[-1].endswith(":alice!alice@chatd NOTICE #lobby :deploy starts now")
    heard = carol.until(lambda m: m.verb in ("NOTICE", "PRIVMSG"))
    assert heard[-1].endswith(":alice!alice@chatd NOTICE #lobby :deploy starts now")
    assert bob.until(lambda line: line.startswith("MSG "))[-1] == (
        "MSG #lobby alice deploy starts now"
    )
    alice.send("@+typing=active TAGMSG #lobby")
    typing = carol.until(lambda m: m.verb == "TAGMSG")
    assert "+typing=active" in typing[-1] and "msgid=" in typing[-1]
    # The line door never sees the TAGMSG: its next line is bob's own message.
    bob.send("anyone there?")
    assert bob.until(lambda line: line.startswith(("MSG ", "OK ")))[0] == (
        "MSG #lobby bob anyone there?"
    )
    assert carol.until(lambda m: m.verb == "PRIVMSG")[-1].endswith(
        ":bob!bob@chatd PRIVMSG #lobby :anyone there?"
    )
    alice.send("PART #lobby :off to lunch")
    assert alice.until(lambda m: m.verb == "PART")[-1].endswith(
        ":alice!alice@chatd PART #lobby :off to lunch"
    )
    assert carol.until(lambda m: m.verb == "PART")[-1].endswith(
        ":alice!alice@chatd PART #lobby :off to lunch"
    )
    assert bob.until(lambda line: line.startswith("PART "))[-1] == "PART #lobby alice"
    assert bob.command("/part #lobby")[-1] == "OK part #lobby"
    assert carol.until(lambda m: m.verb == "PART")[-1].endswith(":bob!bob@chatd PART #lobby")
    alice.send("JOIN #lobby")
    replay = alice.until(lambda m: m.verb == "BATCH" and m.params[0].startswith("-"))
    assert any(line.endswith("NOTICE #lobby :deploy starts now") for line in replay)
    bob.command("/join #lobby")
    history = bob.command("/history #lobby")
    assert any(line.endswith("alice deploy starts now") and line.startswith("HISTORY ")
               for line in history)
