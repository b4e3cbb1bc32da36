"""Cluster mode end to end: two real ``twistd`` nodes on one PostgreSQL and one Redis.

Both nodes share a fresh database on the session's private PostgreSQL and a
private redis-server (``tests/services.py``: skipped naming the Debian
package where a server is missing, failures under
``CHATD_TEST_REQUIRE_ALL=1``). Clients are plain sockets; every read is
bounded by the client's timeout.
"""

import pytest

from tests.programs import require_module
from tests.serverproc import LineClient, ServerProcess

SENT_EACH = 20


@pytest.fixture
def cluster(tmp_path, postgres_server, redis_server):
    """Start nodes on one fresh database and the private Redis; stop them after."""
    require_module("psycopg", "psycopg[binary]")
    require_module("txredisapi", "txredisapi")
    url = postgres_server.fresh_database("cluster")
    started: list[ServerProcess] = []

    def start(name: str, **extra: str) -> ServerProcess:
        directory = tmp_path / name
        directory.mkdir()
        env = {"CHATD_DB": url, "CHATD_REDIS": redis_server.url, "CHATD_IRC_LISTEN": "off"}
        node = ServerProcess(directory, env={**env, **extra})
        started.append(node)
        node.start(timeout=60)
        node.wait_for(r"redis \S+ connected", timeout=60)
        return node

    yield start
    for node in started:
        node.stop()


def room_lines(client: LineClient, count: int) -> list[str]:
    """Read until ``count`` MSG lines of #lobby came; their ``sender text``, in order."""
    said: list[str] = []
    while len(said) < count:
        line = client.read_line()
        assert line, f"connection closed after {said}"
        if line.startswith("MSG #lobby "):
            said.append(line.removeprefix("MSG #lobby "))
    return said


def test_two_nodes_see_one_order_equal_to_history_with_lost_announcements_filled(cluster):
    """alice on one node, bob on the other, both sending at once; bob's node loses every
    odd-numbered announcement (the test hook). Both see every message once, in one order,
    equal to /history's: the lost ones were read back from PostgreSQL."""
    first = cluster("a")
    second = cluster("b", CHATD_TEST_DROP_ANNOUNCEMENTS="odd")
    alice, bob = first.connect(), second.connect()
    alice.login("alice")
    bob.login("bob")
    for number in range(SENT_EACH):
        alice.send(f"a{number}")
        bob.send(f"b{number}")
    # bob's last word comes after everything: it shows his node any gap left.
    alice_saw = room_lines(alice, 2 * SENT_EACH)
    bob_saw = room_lines(bob, 2 * SENT_EACH)
    assert bob.command("end")[-1] == "OK say #lobby"
    assert room_lines(alice, 1) == ["bob end"]
    history = [
        line.split(" ", 3)[3]
        for line in alice.command("/history #lobby 500")
        if line.startswith("HISTORY #lobby ")
    ]
    assert len(history) == 2 * SENT_EACH + 1
    assert alice_saw == bob_saw == history[:-1]
    assert sorted(alice_saw) == sorted(
        [f"alice a{n}" for n in range(SENT_EACH)] + [f"bob b{n}" for n in range(SENT_EACH)]
    )
