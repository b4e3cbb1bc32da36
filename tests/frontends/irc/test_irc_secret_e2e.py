"""Secret rooms on the real server: an IRC user's ``MODE +s`` hides the room from a line user."""

import pytest

from tests.frontends.irc.support import IRCSocketClient
from tests.serverproc import LineClient, ServerProcess


@pytest.fixture
def server(tmp_path):
    """The real ``twistd -ny chatd.tac``, its line and IRC doors on free ports."""
    process = ServerProcess(tmp_path).start()
    yield process
    process.stop()


def test_mode_s_over_irc_hides_the_room_from_rooms_of_a_line_user_outside(server):
    """alice (IRC) opens #hideout and sets +s: bob on the line door, not a member, no
    longer sees it in /rooms and gets no-such-room from /who; carol, a line-door member,
    still sees it; after -s bob sees it again."""
    LineClient(server.port).command("/register alice password1")
    bob = LineClient(server.port)
    bob.login("bob")
    carol = LineClient(server.port)
    carol.login("carol")
    alice = IRCSocketClient(server.irc_port)
    alice.send("PASS password1", "NICK alice", "USER alice 0 * :Alice", "JOIN #hideout")
    alice.until(lambda m: m.verb == "366" and "#hideout" in m.params)
    assert carol.command("/join #hideout")[-1] == "OK join #hideout"
    assert "ROOM #hideout 2" in bob.command("/rooms")
    alice.send("MODE #hideout +s")
    assert alice.until(lambda m: m.verb == "MODE")[-1] == ":alice!alice@chatd MODE #hideout +s"
    assert bob.command("/rooms") == ["ROOM #lobby 3", "OK rooms"]
    assert bob.command("/who #hideout") == ["ERR no-such-room nobody is in #hideout"]
    assert "ROOM #hideout 2" in carol.command("/rooms")
    alice.send("MODE #hideout -s")
    alice.until(lambda m: m.verb == "MODE")
    assert "ROOM #hideout 2" in bob.command("/rooms")
