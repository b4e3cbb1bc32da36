"""A topic's setter and time on the real server survive a restart (IRC's 332/333).

Run on SQLite and on the private PostgreSQL (``any_db_server`` of
tests/test_e2e_server.py).
"""

import time

from tests.frontends.irc.support import IRCSocketClient
from tests.test_e2e_server import any_db_server  # noqa: F401 (a fixture)


def irc_login(port: int, name: str) -> IRCSocketClient:
    """An IRC client logged in as ``name`` (registered already) with PASS."""
    client = IRCSocketClient(port)
    client.send("PASS password1", f"NICK {name}", f"USER {name} 0 * :{name}")
    client.until(lambda m: m.verb == "001")
    return client


def topic_lines(client: IRCSocketClient, room: str) -> tuple[str, str, str]:
    """``TOPIC <room>``'s 332 text and 333 setter and time (seconds)."""
    client.send(f"TOPIC {room}")
    lines = client.until(lambda m: m.verb in ("333", "331"))
    text = next(line for line in lines if " 332 " in line).split(" :", 1)[1]
    setter, seconds = lines[-1].split()[-2:]
    return text, setter, seconds


def test_a_topic_keeps_its_setter_and_time_across_a_restart(any_db_server):  # noqa: F811
    """alice (IRC) sets #plans' topic; after the server stops and starts again, bob's JOIN
    shows 332 and 333 with alice and the time she set it, and TOPIC answers the same."""
    server = any_db_server
    for name in ("alice", "bob"):
        server.connect().login(name)
    alice = irc_login(server.irc_port, "alice")
    alice.send("JOIN #plans")
    alice.until(lambda m: m.verb == "366")
    before = int(time.time())
    alice.send("TOPIC #plans :ship on friday")
    alice.until(lambda m: m.verb == "TOPIC")
    after = int(time.time())
    text, setter, seconds = topic_lines(alice, "#plans")
    assert (text, setter) == ("ship on friday", "alice")
    assert before <= int(seconds) <= after
    alice.close()
    server.stop()
    server.start()
    bob = irc_login(server.irc_port, "bob")
    bob.send("JOIN #plans")
    burst = bob.until(lambda m: m.verb == "366" and "#plans" in m.params)
    assert any(line.endswith(" 332 bob #plans :ship on friday") for line in burst), burst
    (whotime,) = [line for line in burst if " 333 " in line]
    assert whotime.split()[-3:] == ["#plans", "alice", seconds]
    assert topic_lines(bob, "#plans") == ("ship on friday", "alice", seconds)
