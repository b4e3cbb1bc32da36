"""Server operators on the real ``twistd``: CHATD_OPERATORS, IRC's OPER and the line
door's /oper, over real sockets."""

import pytest

from tests.frontends.irc.support import IRCSocketClient
from tests.serverproc import LineClient, ServerProcess


@pytest.fixture
def server(tmp_path):
    """The real server with guests on and operuser listed as a server operator."""
    process = ServerProcess(
        tmp_path, env={"CHATD_GUESTS": "on", "CHATD_OPERATORS": "operuser"}
    ).start()
    yield process
    process.stop()


def test_an_operator_kicks_in_a_room_it_does_not_operate(server):
    """alice opens #den on the line door; an IRC guest is refused KICK (482) until it
    sends OPER operuser operpassword (381, MODE +o), then kicks her; a wrong password
    is 464. On the line door bob's /oper lets him kick the guest in turn."""
    registrar = LineClient(server.port)
    assert registrar.command("/register operuser operpassword") == ["OK register operuser"]
    registrar.close()
    alice = LineClient(server.port)
    alice.login("alice")
    assert alice.command("/join #den")[-1] == "OK join #den"
    guest = IRCSocketClient(server.irc_port)
    guest.send("NICK visitor", "USER v 0 * :Visitor", "JOIN #den")
    guest.until(lambda m: m.verb == "366")
    guest.send("KICK #den alice :no")
    assert guest.until(lambda m: m.verb == "482")
    guest.send("OPER operuser wrongpassword")
    assert guest.until(lambda m: m.verb == "464")
    guest.send("OPER operuser operpassword")
    lines = guest.until(lambda m: m.verb == "MODE")
    assert any(" 381 visitor " in line for line in lines)
    assert lines[-1] == ":visitor!visitor@chatd MODE visitor +o"
    guest.send("WHO visitor")
    who = guest.until(lambda m: m.verb == "315")
    assert who[0].split(" ")[8] == "H*"
    guest.send("KICK #den alice :out you go")
    assert alice.until(lambda line: line.startswith("KICK "))[-1] == (
        "KICK #den alice visitor out you go"
    )
    assert alice.command("/say #den still here?")[-1].startswith("ERR not-in-room")
    bob = LineClient(server.port)
    bob.login("bob")
    bob.command("/join #den")
    assert bob.command("/kick #den visitor")[-1].startswith("ERR forbidden")
    assert bob.command("/oper operuser operpassword") == ["OK oper"]
    assert bob.command("/kick #den visitor enough")[-1] == "OK kick #den"
    kicked = guest.until(lambda m: m.verb == "KICK" and m.params[1] == "visitor")
    assert kicked[-1] == ":bob!bob@chatd KICK #den visitor enough"
    guest.close()
    bob.close()
    alice.close()
