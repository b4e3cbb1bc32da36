"""Rooms people live in, end to end: the real ``twistd``, real sockets, a real
SQLite file, restarts, and the admin command line against the live server."""

import subprocess
import sys

from tests.serverproc import ROOT


def admin(server, *argv: str) -> str:
    """Run ``chatd --db <the server's file> ...`` as an operator would; return stdout."""
    done = subprocess.run(
        [sys.executable, "-m", "chatd", "--db", str(server.db_path), *argv],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_rooms_topics_operators_bans_and_privacy_survive_a_restart(chatd_server):
    """Everything set before a SIGTERM and a restart is there after it."""
    alice, bob, carol = (chatd_server.connect() for _ in range(3))
    alice.login("alice")
    bob.login("bob")
    carol.login("carol")
    assert alice.command("/join #den")[-1] == "OK join #den"
    for client in (bob, carol):
        assert client.command("/join #den")[-1] == "OK join #den"
    for line in ("/topic #den about dens", "/op #den bob", "/private #den on", "/me naps"):
        assert alice.command(line)[-1].startswith("OK "), line
    assert alice.command("/ban #den carol")[-2:] == ["KICK #den carol alice banned", "OK ban #den"]
    assert bob.command("/away on holiday")[-1] == "OK away on holiday"
    chatd_server.restart()

    bob = chatd_server.connect()
    lines = bob.command("/login bob password1")
    assert lines[lines.index("JOIN #den bob") :] == [
        "JOIN #den bob",
        "WHO #den bob",
        "TOPIC #den alice about dens",
        "OPS #den alice bob",
        lines[-2],
        "OK login bob",
    ]
    assert lines[-2].startswith("HISTORYACTION #den ") and lines[-2].endswith(" alice naps")
    carol = chatd_server.connect()
    carol.command("/login carol password1")
    assert carol.command("/join #den") == ["ERR forbidden you are banned from #den"]
    dave = chatd_server.connect()
    dave.login("dave")
    assert dave.command("/join #den")[-1].startswith("ERR forbidden")
    assert "ROOM #den 2" not in dave.command("/rooms")
    whois = dave.command("/whois bob")
    assert whois[-2:] == ["AWAY bob on holiday", "OK whois bob"]
    assert whois[-3].startswith("WHOIS bob online ") and whois[-3].endswith(" #lobby")


def test_a_kicked_and_banned_user_with_three_sessions(chatd_server):
    """All three sessions see KICK and leave the room; the ban holds for new joins."""
    alice = chatd_server.connect()
    alice.login("alice")
    alice.command("/join #den")
    bobs = [chatd_server.connect() for _ in range(3)]
    for bob in bobs:
        bob.login("bob")
        assert bob.command("/join #den")[-1] == "OK join #den"
    assert alice.command("/kick #den bob out you go")[-1] == "OK kick #den"
    for bob in bobs:
        bob.until(lambda line: line == "KICK #den bob alice out you go")
        assert bob.command("/say #den still here?")[-1].startswith("ERR not-in-room")
    assert bobs[0].command("/join #den")[-1] == "OK join #den"
    assert alice.command("/ban #den bob")[-1] == "OK ban #den"
    for bob in bobs:
        bob.until(lambda line: line == "KICK #den bob alice banned")
        assert bob.command("/join #den") == ["ERR forbidden you are banned from #den"]
    fourth = chatd_server.connect()
    fourth.command("/login bob password1")
    assert fourth.command("/join #den") == ["ERR forbidden you are banned from #den"]


def test_admin_room_commands_reach_the_running_server(chatd_server):
    """chatd room op/topic/kick on the live database: members see OPS, TOPIC, KICK."""
    alice, bob = chatd_server.connect(), chatd_server.connect()
    alice.login("alice")
    bob.login("bob")
    alice.command("/join #den")
    bob.command("/join #den")
    assert admin(chatd_server, "room", "op", "#den", "bob") == "bob is now an operator of #den\n"
    bob.until(lambda line: line == "OPS #den alice bob")
    admin(chatd_server, "room", "topic", "#den", "from the admin")
    alice.until(lambda line: line == "TOPIC #den *admin from the admin")
    admin(chatd_server, "room", "kick", "#den", "alice", "--reason", "tidy up")
    alice.until(lambda line: line == "KICK #den alice *admin tidy up")
    bob.until(lambda line: line == "OPS #den bob")
    listed = admin(chatd_server, "room", "list")
    assert "#den  1 member  operators: bob  topic: from the admin\n" in listed
    admin(chatd_server, "room", "ban", "#den", "alice")
    assert alice.command("/join #den") == ["ERR forbidden you are banned from #den"]
