"""Room mode changes on the real server: a line-door member is told an IRC operator's MODE."""

import pytest

from tests.frontends.irc.support import IRCSocketClient
from tests.serverproc import LineClient, ServerProcess


@pytest.fixture
def server(tmp_path):
    """The real ``twistd -ny chatd.tac``, its line and IRC doors on free ports."""
    process = ServerProcess(tmp_path).start()
    yield process
    process.stop()


def test_a_line_user_is_told_an_irc_users_plus_m_and_plus_v(server):
    """alice (IRC) opens #stage; bob (line door) joins. alice's MODE +m reaches bob as
    ``MODE #stage alice moderated on`` before his next message is refused; +v bob reaches
    him as ``MODE #stage alice voice on bob`` and lets him speak; his own /private is
    refused (he is no operator)."""
    LineClient(server.port).command("/register alice password1")
    bob = LineClient(server.port)
    bob.login("bob")
    alice = IRCSocketClient(server.irc_port)
    alice.send("PASS password1", "NICK alice", "USER alice 0 * :Alice", "JOIN #stage")
    alice.until(lambda m: m.verb == "366" and "#stage" in m.params)
    assert bob.command("/join #stage")[-1] == "OK join #stage"
    alice.send("MODE #stage +m")
    assert alice.until(lambda m: m.verb == "MODE")[-1] == ":alice!alice@chatd MODE #stage +m"
    assert bob.until(lambda line: line.startswith("MODE "))[-1] == (
        "MODE #stage alice moderated on"
    )
    assert bob.command("/say #stage may I?")[-1].startswith("ERR forbidden")
    alice.send("MODE #stage +v bob")
    assert alice.until(lambda m: m.verb == "MODE")[-1] == (
        ":alice!alice@chatd MODE #stage +v bob"
    )
    assert bob.until(lambda line: line.startswith("MODE "))[-1] == (
        "MODE #stage alice voice on bob"
    )
    assert bob.command("/say #stage thank you") == [
        "MSG #stage bob thank you", "OK say #stage"
    ]
    assert bob.command("/private #stage on")[-1].startswith("ERR forbidden")
