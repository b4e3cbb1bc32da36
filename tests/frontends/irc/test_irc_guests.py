"""Guests (``CHATD_GUESTS=on``): IRC clients that chat under their nick without an account."""

import dataclasses

import pytest

from chatd.config import Config
from chatd.frontends.irc.message import parse
from tests.frontends.irc.support import IRCHarness


def guest_config(**changes) -> Config:
    """The test harness's configuration with guests on."""
    base = Config(
        bcrypt_rounds=4, rate_limit=None, stored_message_limit=None, room_creation_limit=None,
        guests=True,
    )
    return dataclasses.replace(base, **changes)


@pytest.fixture
def irc() -> IRCHarness:
    """An in-memory server with guests on and the account alice."""
    harness = IRCHarness(guest_config())
    harness.account("alice")
    return harness


def verbs(lines):
    """The verbs and numerics of ``lines``, in order."""
    return [parse(line).verb for line in lines]


def names_of(lines):
    """The names of the 353 replies among ``lines``."""
    return [
        name for line in lines if (message := parse(line)).verb == "353"
        for name in message.params[-1].split()
    ]


def connect_guest(irc, nick, bytewise=False):
    """A client that registers with NICK and USER only; return it and its lines."""
    client = irc.irc_client()
    return client, client.send(f"NICK {nick}", "USER u 0 * :Guest", bytewise=bytewise)


@pytest.mark.parametrize("bytewise", [False, True])
def test_a_guest_is_welcomed_and_joins_nothing_by_itself(irc, bytewise):
    """NICK and USER without a login: the welcome burst, no rooms, no 'log in' notice."""
    _client, lines = connect_guest(irc, "visitor", bytewise)
    assert verbs(lines)[0] == "001" and lines[0].startswith(":chatd 001 visitor ")
    assert "376" in verbs(lines)
    assert "JOIN" not in verbs(lines) and "NOTICE" not in verbs(lines)
    assert irc.chat.users["visitor"].guest


def test_a_guest_chats_with_an_account_on_the_line_door(irc):
    """A guest joins #lobby and talks both ways with alice on the line door."""
    guest, _ = connect_guest(irc, "visitor")
    lines = guest.send("JOIN #lobby")
    assert ":visitor!visitor@chatd JOIN #lobby" in lines
    line = irc.client()
    line.send("/login alice password1")
    assert guest.lines()[-1] == ":alice!alice@chatd JOIN #lobby"
    guest.send("PRIVMSG #lobby :hello from a guest")
    assert any("visitor" in text and "hello from a guest" in text for text in line.lines())
    line.send("/say #lobby welcome, guest")
    assert guest.lines()[-1].endswith("PRIVMSG #lobby :welcome, guest")
    # Direct messages between online users work both ways.
    guest.send("PRIVMSG alice :psst")
    assert any("psst" in text for text in line.lines())


def test_an_accounts_name_is_refused_to_a_guest_with_433(irc):
    """A nick that is an account's answers 433; another NICK then registers."""
    client, lines = connect_guest(irc, "Alice")
    assert verbs(lines) == ["433"]
    assert "alice" not in irc.chat.users
    lines = client.send("NICK alice_guest")
    assert verbs(lines)[0] == "001"


def test_a_nick_in_use_is_refused_and_freed_when_its_guest_leaves(irc):
    """A second guest with the same nick gets 433; once the first quits the nick is free."""
    first, _ = connect_guest(irc, "visitor")
    second, lines = connect_guest(irc, "VISITOR")
    assert verbs(lines) == ["433"]
    first.send("JOIN #lobby")
    first.send("QUIT :bye")
    first.protocol.connectionLost(None)
    assert "visitor" not in irc.chat.users
    assert "visitor" not in irc.chat.rooms.get("#lobby").members if "#lobby" in irc.chat.rooms \
        else True
    lines = second.send("NICK visitor")
    assert verbs(lines)[0] == "001"


def test_the_nick_of_an_online_account_is_refused(irc):
    """An account's session holds its name: a guest cannot take it."""
    irc.account("bob")
    line = irc.client()
    line.send("/login bob password1")
    _client, lines = connect_guest(irc, "bob")
    assert verbs(lines) == ["433"]


def test_a_guest_cannot_store_a_message_for_someone_offline(irc):
    """A DM to an offline account is refused (401) and nothing is stored."""
    guest, _ = connect_guest(irc, "visitor")
    lines = guest.send("PRIVMSG alice :are you there?")
    assert verbs(lines) == ["401"] and "guests cannot leave messages" in lines[0]
    line = irc.client()
    assert not any("are you there" in text for text in line.send("/login alice password1"))


def test_a_guest_that_opens_a_room_is_its_operator_while_it_stays(irc):
    """A guest opening a new room is its operator (NAMES @), in memory only: nothing in
    the database's operators; it sets +t, kicks, sets the topic; an account joining later
    is no operator; when the guest parts, the room has none and -t/+t are gone with it."""
    guest, _ = connect_guest(irc, "visitor")
    lines = guest.send("JOIN #den")
    assert names_of(lines) == ["@visitor"]
    assert irc.chat.rooms["#den"].operators == {"visitor": "visitor"}
    connection = irc.database.connection
    assert connection.execute("SELECT count(*) FROM room_members").fetchone()[0] == 0
    line = irc.client()
    line.send("/login alice password1")
    assert line.send("/join #den")[-1].startswith("OK")
    assert "OPS #den visitor" in line.send("/who #den")
    assert line.send("/topic #den mine")[0].startswith("ERR forbidden")
    assert guest.send("MODE #den -t")[-1] == ":visitor!visitor@chatd MODE #den -t"
    assert line.send("/topic #den mine")[-1].startswith("OK")
    guest.send("MODE #den +t")
    assert line.lines()[-1] == "MODE #den visitor topic-open off"
    assert line.send("/topic #den again")[0].startswith("ERR forbidden")
    assert guest.send("TOPIC #den :the guest's")[-1].endswith("TOPIC #den :the guest's")
    assert guest.send("MODE #den +o alice")[-1] == ":chatd MODE #den +o alice"
    assert guest.send("MODE #den -o alice")[-1] == ":chatd MODE #den -o alice"
    line.lines()
    guest.send("KICK #den alice :bye")
    assert line.lines() == ["KICK #den alice visitor bye"]
    assert "#den" not in irc.chat.users["alice"].rooms
    guest.send("PART #den")
    assert "#den" not in irc.chat.rooms


def test_a_guest_operator_may_not_leave_lasting_marks(irc):
    """No bans and no +i from a guest operator (they would outlive its stay); it cannot
    be made an operator of a room it did not open, nor make another guest one."""
    guest, _ = connect_guest(irc, "visitor")
    guest.send("JOIN #den")
    assert verbs(guest.send("MODE #den +b alice")) == ["482"]
    assert verbs(guest.send("MODE #den +i")) == ["482"]
    other, _ = connect_guest(irc, "other")
    other.send("JOIN #den")
    guest.lines()
    assert verbs(guest.send("MODE #den +o other")) == ["482"]
    assert irc.chat.rooms["#den"].operators == {"visitor": "visitor"}
    assert verbs(other.send("TOPIC #den :not mine")) == ["482"]
    # The lobby and any room that existed before: no guest is their operator.
    other.send("JOIN #lobby")
    assert "other" not in irc.chat.rooms["#lobby"].operators
    line = irc.client()
    line.send("/login alice password1")
    line.send("/join #old")
    line.send("/part #old")
    third, _ = connect_guest(irc, "third")
    lines = third.send("JOIN #old")
    assert names_of(lines) == ["third"]
    assert verbs(third.send("MODE #old +o third")) == ["482"]


def test_a_guest_operator_that_quits_leaves_the_room_without_one(irc):
    """The guest's operator status goes with it: the others see it go (OPS, MODE -o)."""
    guest, _ = connect_guest(irc, "visitor")
    guest.send("JOIN #den")
    line = irc.client()
    line.send("/login alice password1")
    line.send("/join #den")
    line.lines()
    guest.send("QUIT :bye")
    assert line.lines() == ["PART #den visitor", "OPS #den"]
    assert irc.chat.rooms["#den"].operators == {}
    assert line.send("/topic #den anyone now")[-1].startswith("OK")


def test_an_operator_kicks_a_guest(irc):
    """A guest's membership is only in memory: an operator's KICK removes it."""
    line = irc.client()
    line.send("/login alice password1")
    line.send("/join #den")
    guest, _ = connect_guest(irc, "visitor")
    guest.send("JOIN #den")
    line.lines()
    assert line.send("/kick #den visitor out")[-1].startswith("OK")
    assert guest.lines()[-1] == ":alice!alice@chatd KICK #den visitor out"
    assert "#den" not in irc.chat.users["visitor"].rooms


def test_a_guest_cannot_join_a_private_room(irc):
    """A private room needs an invitation, which only an account keeps: 473."""
    line = irc.client()
    line.send("/login alice password1")
    line.send("/join #den")
    line.send("/private #den on")
    guest, _ = connect_guest(irc, "visitor")
    lines = guest.send("JOIN #den")
    assert verbs(lines) == ["473"]


def test_a_guest_registers_its_nick_then_identifies(irc):
    """NickServ REGISTER from a guest creates its account; IDENTIFY leaves the guest's rooms
    and logs in, back in #lobby as the account."""
    guest, _ = connect_guest(irc, "newcomer")
    guest.send("JOIN #den")
    lines = guest.send("PRIVMSG NickServ :REGISTER password1")
    assert "Account newcomer created" in lines[-1]
    assert irc.chat.users["newcomer"].guest
    lines = guest.send("PRIVMSG NickServ :IDENTIFY password1")
    assert ":newcomer!newcomer@chatd PART #den" in lines
    assert "900" in verbs(lines)
    assert ":newcomer!newcomer@chatd JOIN #lobby" in lines
    assert not irc.chat.users["newcomer"].guest


def test_another_guests_nick_cannot_be_registered(irc):
    """REGISTER of a name a guest is using fails for anyone but that guest."""
    connect_guest(irc, "visitor")
    other, _ = connect_guest(irc, "other")
    lines = other.send("REGISTER visitor * password1")
    assert lines[-1].startswith(":chatd FAIL REGISTER ACCOUNT_EXISTS visitor")


def test_an_account_login_ends_a_guest_under_its_name(irc):
    """An account made under a guest's name by another way than the gate (here the
    accounts directly, as the admin tool would) wins: its login ends the guest."""
    guest, _ = connect_guest(irc, "latecomer")
    irc.accounts.register("latecomer", "password1")
    assert irc.chat.users["latecomer"].guest
    line = irc.client()
    assert "OK login latecomer" in line.send("/login latecomer password1")
    assert guest.lines()[-1].startswith("ERROR") and guest.transport.closed
    assert not irc.chat.users["latecomer"].guest


def test_with_guests_off_a_client_without_login_may_only_log_in():
    """CHATD_GUESTS=off (the default): the welcome, a NOTICE saying how to log in, no JOIN."""
    irc = IRCHarness(guest_config(guests=False))
    client, lines = connect_guest(irc, "visitor")
    assert verbs(lines)[0] == "001" and "NOTICE" in verbs(lines)
    lines = client.send("JOIN #lobby")
    assert verbs(lines) == ["NOTICE"] and "Log in first" in lines[0]
    assert "visitor" not in irc.chat.users


def test_an_operator_is_told_why_a_guest_cannot_be_banned(irc):
    """Bans are kept by account: alice's ban of a guest in her room is refused saying so
    (441 over IRC, no-such-user on the line door), and the guest stays until kicked."""
    line = irc.client()
    line.send("/login alice password1")
    line.send("/join #den")
    guest, _ = connect_guest(irc, "visitor")
    guest.send("JOIN #den")
    assert line.send("/ban #den visitor")[-1] == (
        "ERR no-such-user visitor is a guest: bans are kept by account, so kick it instead"
    )
    alice = irc.irc_client()
    alice.send("PASS password1", "NICK alice", "USER alice 0 * :alice")
    refused = alice.send("MODE #den +b visitor")
    assert verbs(refused) == ["441"] and "bans are kept by account" in refused[0]
    assert "#den" in irc.chat.users["visitor"].rooms
    assert line.send("/kick #den visitor go")[-1] == "OK kick #den"


def test_ending_registration_during_sasl_aborts_it_before_anything_else(irc):
    """IRCv3 SASL: CAP END while an exchange waits for its payload answers 906 first,
    at once (a guest's start may take a database round trip: a PING sent behind CAP END
    must not be answered before it), and the client comes in as a guest."""
    client = irc.irc_client()
    client.send("CAP LS 302", "CAP REQ :sasl")
    assert client.send("AUTHENTICATE PLAIN") == ["AUTHENTICATE +"]
    assert client.send("NICK visitor", "USER u 0 * :V") == []
    lines = client.send("CAP END", "PING sync")
    assert verbs(lines)[0] == "906"
    assert {"001", "PONG"} <= set(verbs(lines))
    assert irc.chat.users["visitor"].guest
