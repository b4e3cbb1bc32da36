"""The IRC door is limited like the line door: the per-user caps on rooms, the
per-address limit on new rooms and the limit on stored DMs live in the shared
gate (chatd/auth_gate.py), so JOIN and PRIVMSG meet them as /join and /msg do."""

from chatd.config import Allowance, Config
from chatd.frontends.irc.message import parse
from tests.frontends.irc.support import IRCHarness
from tests.support import SlowDatabase


def harness_with(database=None, **settings) -> IRCHarness:
    """An IRC harness without the line rate limit, with ``settings`` and accounts alice, bob."""
    harness = IRCHarness(Config(bcrypt_rounds=4, rate_limit=None, **settings), database=database)
    harness.account("alice")
    harness.account("bob")
    return harness


def irc_alice(harness: IRCHarness, host: str = "127.0.0.1"):
    """alice logged in over IRC (in #lobby), her welcome read."""
    client = harness.irc_client(host=host)
    client.login_with_pass("alice")
    return client


def test_irc_join_meets_the_rooms_per_user_cap_at_and_past_it():
    """Cap 3: #lobby and two more over IRC; the third JOIN gets 405; a PART makes room."""
    harness = harness_with(max_rooms_per_user=3)
    client = irc_alice(harness)
    assert "JOIN" in client.verbs(client.send("JOIN #a"))
    assert "JOIN" in client.verbs(client.send("JOIN #b"))
    refused = [parse(line) for line in client.send("JOIN #c")]
    assert [(message.verb, message.params) for message in refused] == [
        ("405", ("alice", "#c", "you are in 3 rooms already; /part one first"))
    ]
    # Joining a room one is in costs nothing.
    assert "405" not in client.verbs(client.send("JOIN #a"))
    client.send("PART #b")
    assert "JOIN" in client.verbs(client.send("JOIN #c"))


def test_the_rooms_cap_counts_the_users_rooms_from_every_door():
    """Rooms joined on the line door count against an IRC JOIN of the same user, and back."""
    harness = harness_with(max_rooms_per_user=3)
    line = harness.logged_in("alice")
    line.send("/join #a", "/join #b")
    client = irc_alice(harness)
    assert client.verbs(client.send("JOIN #c")) == ["405"]
    client.send("PART #b")
    assert "JOIN" in client.verbs(client.send("JOIN #c"))
    assert line.send("/join #d")[-1].startswith("ERR too-many-rooms you are in 3 rooms")


def test_parallel_joins_from_both_doors_cannot_pass_the_cap():
    """With commits held, a line /join and two IRC JOINs of one user: one passes (cap 2)."""
    database = SlowDatabase()
    harness = harness_with(database, max_rooms_per_user=2)
    line = harness.logged_in("alice")
    client = irc_alice(harness)
    line.lines()
    database.holding = True
    line.feed(b"/join #x\n")
    client.protocol.dataReceived(b"JOIN #y\r\nJOIN #z\r\n")
    for _ in range(4):
        harness.commit_held()
    irc_verbs = client.verbs(client.lines())
    line_finals = [text for text in line.lines() if text.startswith(("OK ", "ERR "))]
    assert line_finals == ["OK join #x"]
    assert irc_verbs.count("405") == 2
    assert harness.chat.users["alice"].rooms.keys() == {"#lobby", "#x"}


def test_irc_join_meets_the_new_rooms_per_address_limit():
    """2 new rooms per 60 s per address: the third new room over IRC gets 405; 30 s buys one."""
    harness = harness_with(room_creation_limit=Allowance(2, 60.0))
    line = harness.logged_in("bob")
    assert line.send("/join #one")[-1] == "OK join #one"
    client = irc_alice(harness)
    assert "JOIN" in client.verbs(client.send("JOIN #two"))
    refused = [parse(line) for line in client.send("JOIN #three")]
    assert [message.verb for message in refused] == ["405"]
    assert refused[0].params[-1] == "too many new rooms from your address; try again in 30 s"
    # A room with members opens nothing: no limit.
    assert "JOIN" in client.verbs(client.send("JOIN #one"))
    harness.clock.advance(30)
    assert "JOIN" in client.verbs(client.send("JOIN #three"))
    # Another address has its own allowance.
    other = harness.irc_client(host="192.0.2.7")
    other.login_with_pass("bob")
    assert "JOIN" in other.verbs(other.send("JOIN #four"))


def test_irc_privmsg_meets_the_stored_message_limit_at_and_past_it():
    """3 stored DMs per 60 s: the fourth PRIVMSG to an offline user is refused, not stored."""
    harness = harness_with(stored_message_limit=Allowance(3, 60.0))
    harness.client().send("/register carol password1")
    client = irc_alice(harness)
    for number in range(3):
        assert client.send(f"PRIVMSG bob :hi {number}") == []
    refused = [parse(line) for line in client.send("PRIVMSG bob :hi 3")]
    assert [(message.verb, message.params[:3]) for message in refused] == [
        ("FAIL", ("PRIVMSG", "CANNOT_SEND", "bob"))
    ]
    assert refused[0].params[-1].startswith("too many messages stored for people who are away")
    # A delivered DM is not counted; NOTICE is refused silently.
    carol = harness.logged_in("carol")
    client.lines()
    assert client.send("PRIVMSG carol :online") == []
    assert carol.lines() == ["DM alice carol online"]
    assert client.send("NOTICE bob :quiet") == []
    # The account is spent on every door: alice's line session is refused too.
    line = harness.logged_in("alice")
    assert line.send("/msg bob from the line")[-1].startswith("ERR rate-limited")
    stored = harness.database.connection.execute("SELECT count(*) FROM stored_messages")
    assert stored.fetchall() == [(3,)]
    harness.clock.advance(20)
    assert client.send("PRIVMSG bob :hi 4") == []


def test_irc_logins_check_passwords_as_the_line_door_does():
    """The gate tries a password's NFC form on every door: an account registered with
    ``pässwörd1`` logs in over IRC when the client sends it decomposed (NFD)."""
    import unicodedata

    harness = harness_with()
    harness.account("dora", "pässwörd1")
    decomposed = unicodedata.normalize("NFD", "pässwörd1")
    assert decomposed != "pässwörd1"
    client = harness.irc_client()
    lines = client.login_with_pass("dora", decomposed)
    assert ":dora!dora@chatd JOIN #lobby" in lines
    assert harness.irc.gate is harness.factory.gate
