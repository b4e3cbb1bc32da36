"""Guests on the real server: ``CHATD_GUESTS=on`` under twistd, real sockets."""

import pytest

from tests.frontends.irc.support import IRCSocketClient
from tests.serverproc import LineClient, ServerProcess


@pytest.fixture
def server(tmp_path):
    """The real ``twistd -ny chatd.tac`` with guests allowed on its IRC door."""
    process = ServerProcess(tmp_path, env={"CHATD_GUESTS": "on"}).start()
    yield process
    process.stop()


def test_a_guest_talks_with_a_line_user_and_its_nick_is_freed(server):
    """A guest (NICK and USER only) chats in #lobby with bob on the line door; an
    account's name is refused with 433; the nick is free again once the guest quits."""
    bob = LineClient(server.port)
    bob.login("bob")
    taken = IRCSocketClient(server.irc_port)
    taken.send("NICK bob", "USER b 0 * :B")
    assert taken.until(lambda m: m.verb == "433")[-1].startswith(":chatd 433 * bob ")
    taken.close()
    guest = IRCSocketClient(server.irc_port)
    guest.send("NICK visitor", "USER v 0 * :Visitor", "JOIN #lobby")
    lines = guest.until(lambda m: m.verb == "366")
    assert lines[0].startswith(":chatd 001 visitor ")
    assert bob.until(lambda line: line.startswith("JOIN "))[-1] == "JOIN #lobby visitor"
    guest.send("PRIVMSG #lobby :hello, I am a guest")
    assert bob.until(lambda line: line.startswith("MSG "))[-1] == (
        "MSG #lobby visitor hello, I am a guest"
    )
    bob.command("hello, guest")
    heard = guest.until(lambda m: m.verb == "PRIVMSG")
    assert heard[-1].endswith(":bob!bob@chatd PRIVMSG #lobby :hello, guest")
    guest.send("QUIT :bye")
    guest.until(lambda m: m.verb == "ERROR")
    assert bob.until(lambda line: line.startswith("PART "))[-1] == "PART #lobby visitor"
    again = IRCSocketClient(server.irc_port)
    again.send("NICK visitor", "USER v 0 * :Visitor")
    assert again.until(lambda m: m.verb in ("001", "433"))[-1].startswith(":chatd 001 visitor ")
