"""Server operators over IRC: OPER (381/464/491/461), user MODE +o/-o, ``*`` in WHO, 313."""

import dataclasses

import pytest

from chatd.config import Config
from chatd.frontends.irc.message import parse
from tests.frontends.irc.support import IRCHarness


@pytest.fixture
def irc() -> IRCHarness:
    """Guests on; operuser is listed in CHATD_OPERATORS, plainuser is not."""
    config = dataclasses.replace(
        Config(bcrypt_rounds=4, rate_limit=None, stored_message_limit=None,
               room_creation_limit=None, guests=True),
        operators=("operuser",),
    )
    harness = IRCHarness(config)
    harness.account("operuser", "operpassword")
    harness.account("plainuser", "plainpassword")
    harness.account("alice")
    return harness


def verbs(lines):
    """The verbs and numerics of ``lines``, in order."""
    return [parse(line).verb for line in lines]


def guest(irc, nick, bytewise=False):
    """A guest registered with NICK and USER; return the client."""
    client = irc.irc_client()
    client.send(f"NICK {nick}", "USER u 0 * :Guest", bytewise=bytewise)
    return client


@pytest.mark.parametrize("bytewise", [False, True])
def test_oper_with_a_listed_accounts_password_gives_381_and_mode_plus_o(irc, bytewise):
    """A guest sends OPER operuser operpassword: 381, then MODE nick +o; the core flags it."""
    client = guest(irc, "visitor", bytewise)
    lines = client.send("OPER operuser operpassword", bytewise=bytewise)
    assert verbs(lines) == ["381", "MODE"]
    assert lines[0].startswith(":chatd 381 visitor ")
    assert lines[1] == ":visitor!visitor@chatd MODE visitor +o"
    assert irc.chat.users["visitor"].oper
    umode = [parse(line) for line in client.send("MODE visitor")]
    assert umode[0].verb == "221" and umode[0].params[-1] == "+o"


@pytest.mark.parametrize("bytewise", [False, True])
def test_a_wrong_password_or_unknown_account_is_464(irc, bytewise):
    """Wrong password and unknown account answer the same 464; no operator made."""
    client = guest(irc, "visitor", bytewise)
    assert verbs(client.send("OPER operuser wrong", bytewise=bytewise)) == ["464"]
    assert verbs(client.send("OPER nosuchaccount operpassword", bytewise=bytewise)) == ["464"]
    assert not irc.chat.users["visitor"].oper


def test_the_right_password_of_an_account_not_listed_is_491(irc):
    """plainuser's own password is right, but plainuser is no operator: 491."""
    client = guest(irc, "visitor")
    assert verbs(client.send("OPER plainuser plainpassword")) == ["491"]
    assert not irc.chat.users["visitor"].oper


def test_oper_without_both_parameters_is_461(irc):
    """OPER with one parameter or none: 461."""
    client = guest(irc, "visitor")
    assert verbs(client.send("OPER operuser")) == ["461"]
    assert verbs(client.send("OPER")) == ["461"]


def test_a_logged_in_user_opers_with_another_accounts_credentials(irc):
    """alice (logged in) opers with operuser's password: the oper block is not the nick."""
    client = irc.irc_client()
    client.login_with_pass("alice")
    assert verbs(client.send("OPER operuser operpassword")) == ["381", "MODE"]
    assert irc.chat.users["alice"].oper


def test_who_and_whox_show_star_and_whois_313_for_an_operator(irc):
    """WHO by nick: H* (G* when away); WHOX f field too; WHOIS has 313; others see it."""
    oper = guest(irc, "visitor")
    oper.send("OPER operuser operpassword")
    other = guest(irc, "watcher")
    who = [parse(line) for line in other.send("WHO visitor")]
    assert who[0].verb == "352" and who[0].params[6] == "H*"
    oper.send("AWAY :gone")
    who = [parse(line) for line in other.send("WHO visitor")]
    assert who[0].params[6] == "G*"
    whox = [parse(line) for line in other.send("WHO visitor %tnf,42")]
    assert whox[0].verb == "354" and list(whox[0].params[1:]) == ["42", "visitor", "G*"]
    assert "313" in verbs(other.send("WHOIS visitor"))
    # The room's WHO puts the star before the room prefix.
    oper.send("JOIN #ops")
    who = [parse(line) for line in oper.send("WHO #ops")]
    assert who[0].params[6] == "G*@"


def test_mode_minus_o_drops_the_operator_status(irc):
    """MODE nick -o echoes and ends it: no star in WHO, no 313; MODE +o gives nothing."""
    client = guest(irc, "visitor")
    client.send("OPER operuser operpassword")
    assert client.send("MODE visitor -o") == [":visitor!visitor@chatd MODE visitor -o"]
    assert not irc.chat.users["visitor"].oper
    assert client.send("MODE visitor +o") == []
    assert not irc.chat.users["visitor"].oper
    who = [parse(line) for line in client.send("WHO visitor")]
    assert who[0].params[6] == "H"
    assert "313" not in verbs(client.send("WHOIS visitor"))


def test_a_server_operator_kicks_in_a_room_it_does_not_operate(irc):
    """alice opens #room (its operator); the guest operator kicks her all the same."""
    alice = irc.irc_client()
    alice.login_with_pass("alice")
    alice.send("JOIN #room")
    oper = guest(irc, "visitor")
    oper.send("JOIN #room")
    assert "482" in verbs(oper.send("KICK #room alice :no"))
    oper.send("OPER operuser operpassword")
    lines = oper.send("KICK #room alice :out")
    assert any(parse(line).verb == "KICK" for line in lines)
    assert "room" not in irc.chat.users["alice"].rooms
