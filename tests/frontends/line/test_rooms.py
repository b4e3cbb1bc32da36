"""Rooms people live in, over StringTransport: remembered membership, topics,
operators, kicks, bans, private rooms, invitations, and the extensions
``/me``, ``/away`` and ``/whois``.

Every command is fed whole and byte by byte (the ``chat`` fixture).
"""

import pytest

from chatd.core.rooms import HISTORY_ON_JOIN
from chatd.frontends.line.render import format_timestamp
from chatd.storage import transactions
from chatd.storage.sqlite import schema
from tests.support import ChatHarness, InlineDatabase

NOW = format_timestamp(1_764_064_800_000)


@pytest.fixture(params=[False, True], ids=["whole", "bytewise"])
def chat(request):
    """A harness whose clients send whole or byte by byte."""
    harness = ChatHarness()
    original = harness.client

    def client(*args, **kwargs):
        made = original(*args, **kwargs)
        send = made.send
        made.send = lambda *lines: send(*lines, bytewise=request.param)
        return made

    harness.client = client
    return harness


def quiet(*clients) -> None:
    """Forget the lines the clients have been sent so far."""
    for client in clients:
        client.lines()


def in_room(harness, name: str, room: str):
    """A logged-in client of ``name`` that has joined ``room``; its lines read."""
    client = harness.logged_in(name)
    client.send(f"/join {room}")
    return client


# --- remembered rooms ---------------------------------------------------------


def test_a_first_session_rejoins_every_room_of_the_user(chat):
    """Logging in again rejoins #lobby and #a: JOIN, WHO, OPS, HISTORY each, then OK login."""
    alice = in_room(chat, "alice", "#a")
    alice.send("/me waves", "hello")
    bob = in_room(chat, "bob", "#a")
    alice.close()
    assert bob.lines() == ["PART #lobby alice", "PART #a alice"]
    # Offline members are members still, but WHO shows those online only.
    assert bob.send("/who #a") == ["WHO #a bob", "OPS #a alice", "OK who #a"]
    again = chat.client()
    assert again.send("/login alice password1") == [
        "JOIN #lobby alice",
        "WHO #lobby alice bob",
        "JOIN #a alice",
        "WHO #a alice bob",
        "OPS #a alice",
        f"HISTORYACTION #a {NOW} alice waves",
        f"HISTORY #a {NOW} alice hello",
        "OK login alice",
    ]
    assert bob.lines() == ["JOIN #lobby alice", "JOIN #a alice"]
    # The most recently joined room is current.
    assert again.send("back") == ["MSG #a alice back", "OK say #a"]


def test_part_ends_the_membership_for_good(chat):
    """After /part the room is not rejoined at the next login; #lobby always is."""
    alice = in_room(chat, "alice", "#a")
    alice.send("/part #a", "/part #lobby")
    alice.close()
    lines = chat.client().send("/login alice password1")
    assert lines == ["JOIN #lobby alice", "WHO #lobby alice", "OK login alice"]


def test_rooms_counts_members_online_or_not(chat):
    """/rooms lists rooms with members, counting those offline too."""
    alice = in_room(chat, "alice", "#a")
    bob = chat.logged_in("bob")
    alice.close()
    quiet(bob)
    assert bob.send("/rooms") == ["ROOM #a 1", "ROOM #lobby 2", "OK rooms"]


# --- topics -------------------------------------------------------------------


def test_the_topic_is_set_by_an_operator_and_shown_to_joiners(chat):
    """TOPIC to every member; a joiner gets it after WHO, before OPS; /topic shows it."""
    alice = in_room(chat, "alice", "#a")
    bob = in_room(chat, "bob", "#a")
    alice.lines()
    assert bob.send("/topic #a mine now") == ["ERR forbidden only an operator of #a may do that"]
    assert alice.send("/topic #a all about a") == ["TOPIC #a alice all about a", "OK topic #a"]
    assert bob.lines() == ["TOPIC #a alice all about a"]
    assert bob.send("/topic #a") == ["TOPIC #a alice all about a", "OK topic #a"]
    carol = chat.logged_in("carol")
    assert carol.send("/join #a") == [
        "JOIN #a carol",
        "WHO #a alice bob carol",
        "TOPIC #a alice all about a",
        "OPS #a alice",
        "OK join #a",
    ]
    assert carol.send("/topic #b x")[0].startswith("ERR not-in-room")
    assert carol.send("/topic")[0].startswith("ERR bad-arguments")


def test_a_room_without_operators_lets_every_member_set_the_topic(chat):
    """#lobby has no operator: any member sets its topic; no topic, no TOPIC line."""
    alice, bob = chat.logged_in("alice"), chat.logged_in("bob")
    alice.lines()
    assert bob.send("/topic #lobby") == ["OK topic #lobby"]
    assert bob.send("/topic #lobby welcome all") == [
        "TOPIC #lobby bob welcome all",
        "OK topic #lobby",
    ]
    assert alice.lines() == ["TOPIC #lobby bob welcome all"]


# --- operators ----------------------------------------------------------------


def test_op_and_deop(chat):
    """Operators name operators among members: OPS to all; others are refused."""
    alice = in_room(chat, "alice", "#a")
    bob = in_room(chat, "bob", "#a")
    chat.logged_in("carol")
    quiet(alice, bob)
    assert bob.send("/op #a bob") == ["ERR forbidden only an operator of #a may do that"]
    assert alice.send("/op #a carol") == ["ERR no-such-user carol is not a member"]
    assert alice.send("/op #a nobody")[0] == "ERR no-such-user there is no user nobody"
    assert alice.send("/op #a bad!name")[0].startswith("ERR invalid-name")
    assert alice.send("/op #a BOB") == ["OPS #a alice bob", "OK op #a"]
    assert bob.lines() == ["OPS #a alice bob"]
    assert bob.send("/deop #a alice") == ["OPS #a bob", "OK deop #a"]
    quiet(alice)
    assert alice.send("/topic #a x") == ["ERR forbidden only an operator of #a may do that"]
    assert alice.send("/op #b alice")[0].startswith("ERR not-in-room")
    assert alice.send("/op #a")[0].startswith("ERR bad-arguments")


def test_an_operator_who_parts_is_no_longer_one(chat):
    """Parting ends the membership and the operator status with it: OPS to those left."""
    alice = in_room(chat, "alice", "#a")
    bob = in_room(chat, "bob", "#a")
    quiet(alice, bob)
    assert alice.send("/part #a") == ["PART #a alice", "OK part #a"]
    assert bob.lines() == ["PART #a alice", "OPS #a"]
    assert bob.send("/topic #a ours") == ["TOPIC #a bob ours", "OK topic #a"]


# --- kicks and bans -------------------------------------------------------------


def test_a_kick_reaches_every_session_of_the_kicked_user(chat):
    """KICK to all members, the kicked user's three sessions included; they are out."""
    alice = in_room(chat, "alice", "#a")
    sessions = [in_room(chat, "bob", "#a") for _ in range(3)]
    quiet(alice, *sessions)
    assert alice.send("/kick #a bob spamming a lot") == [
        "KICK #a bob alice spamming a lot",
        "OK kick #a",
    ]
    for session in sessions:
        assert session.lines() == ["KICK #a bob alice spamming a lot"]
    for session in sessions:
        # The current room moves back to #lobby; #a is not theirs any more.
        assert session.send("x")[-2:] == ["MSG #lobby bob x", "OK say #lobby"]
        assert session.send("/say #a x")[-1].startswith("ERR not-in-room")
    quiet(alice)
    assert alice.send("/who #a") == ["WHO #a alice", "OPS #a alice", "OK who #a"]
    assert alice.send("/kick #a bob") == ["ERR no-such-user bob is not a member"]
    # A kicked user may come back (no ban): no reason, no trailing space.
    assert sessions[0].send("/join #a")[-1] == "OK join #a"
    quiet(alice)
    assert alice.send("/kick #a bob")[0] == "KICK #a bob alice"


def test_a_kick_needs_an_operator(chat):
    """A member who is not an operator cannot kick."""
    in_room(chat, "alice", "#a")
    bob = in_room(chat, "bob", "#a")
    assert bob.send("/kick #a alice") == ["ERR forbidden only an operator of #a may do that"]


def test_a_ban_kicks_and_keeps_the_user_out_until_lifted(chat):
    """/ban: MODE ... ban on, then KICK ... banned to all, every session out; /join
    forbidden; /unban (MODE ... ban off to the members) lets in."""
    alice = in_room(chat, "alice", "#a")
    bobs = [in_room(chat, "bob", "#a") for _ in range(3)]
    quiet(alice)
    told = ["MODE #a alice ban on bob", "KICK #a bob alice banned"]
    assert alice.send("/ban #a bob") == [*told, "OK ban #a"]
    for bob in bobs:
        assert bob.lines()[-2:] == told
    assert bobs[0].send("/join #a") == ["ERR forbidden you are banned from #a"]
    assert alice.send("/ban #a nobody")[0] == "ERR no-such-user there is no user nobody"
    assert alice.send("/unban #a bob") == ["MODE #a alice ban off bob", "OK unban #a"]
    assert bobs[0].lines() == []
    assert bobs[1].send("/join #a")[-1] == "OK join #a"


def test_a_ban_of_an_offline_member_ends_the_membership(chat):
    """A banned member with no session is not rejoined at their next login."""
    alice = in_room(chat, "alice", "#a")
    bob = in_room(chat, "bob", "#a")
    bob.close()
    alice.lines()
    assert alice.send("/ban #a bob") == [
        "MODE #a alice ban on bob", "KICK #a bob alice banned", "OK ban #a"
    ]
    lines = chat.client().send("/login bob password1")
    assert lines == ["JOIN #lobby bob", "WHO #lobby alice bob", "OK login bob"]


# --- private rooms and invitations -------------------------------------------------


def test_a_private_room_takes_members_and_the_invited_only(chat):
    """Private: hidden from others' /rooms, /join forbidden, an invitation lets in once."""
    alice = in_room(chat, "alice", "#a")
    bob = chat.logged_in("bob")
    quiet(alice)
    assert alice.send("/private #a maybe")[0].startswith("ERR bad-arguments")
    assert alice.send("/private #a on") == ["MODE #a alice private on", "OK private #a"]
    assert bob.send("/rooms") == ["ROOM #lobby 2", "OK rooms"]
    assert alice.send("/rooms") == ["ROOM #a 1", "ROOM #lobby 2", "OK rooms"]
    assert bob.send("/who #a")[0].startswith("ERR no-such-room")
    assert bob.send("/join #a") == ["ERR forbidden #a is private: you need an invitation"]
    assert alice.send("/invite #a bob") == ["OK invite #a"]
    assert bob.lines() == ["INVITE #a alice"]
    assert bob.send("/join #a")[-1] == "OK join #a"
    # Only an operator invites into a private room.
    assert bob.send("/invite #a carol") == ["ERR forbidden only an operator of #a may do that"]
    assert bob.send("/private #a off") == ["ERR forbidden only an operator of #a may do that"]
    # Kicked, the invitation is used up: bob needs another.
    alice.send("/kick #a bob")
    quiet(bob)
    assert bob.send("/join #a")[0] == "ERR forbidden #a is private: you need an invitation"
    assert alice.send("/private #a off") == ["MODE #a alice private off", "OK private #a"]
    assert bob.send("/join #a")[-1] == "OK join #a"


def test_an_invitation_waits_for_a_user_with_no_session(chat):
    """INVITE for an offline user comes at their next login, before OK login."""
    chat.logged_in("bob").close()
    alice = in_room(chat, "alice", "#a")
    alice.send("/private #a on")
    assert alice.send("/invite #a bob") == ["OK invite #a"]
    assert alice.send("/invite #a nobody")[0] == "ERR no-such-user there is no user nobody"
    bob = chat.client()
    assert bob.send("/login bob password1")[-2:] == ["INVITE #a alice", "OK login bob"]
    bob.close()
    # Shown once: not again at the login after.
    again = chat.client()
    assert "INVITE #a alice" not in again.send("/login bob password1")
    assert again.send("/join #a")[-1] == "OK join #a"


def test_any_member_invites_into_a_public_room(chat):
    """In a public room a member who is not an operator may invite."""
    in_room(chat, "alice", "#a")
    bob = in_room(chat, "bob", "#a")
    carol = chat.logged_in("carol")
    quiet(bob)
    assert bob.send("/invite #a carol") == ["OK invite #a"]
    assert carol.lines() == ["INVITE #a bob"]


# --- /me ---------------------------------------------------------------------------


def test_me_is_an_action_kept_in_history_as_one(chat):
    """/me: ACTION to every member, OK me; replayed as HISTORYACTION among HISTORY."""
    alice = in_room(chat, "alice", "#a")
    bob = in_room(chat, "bob", "#a")
    alice.lines()
    assert alice.send("/me waves at everyone") == [
        "ACTION #a alice waves at everyone",
        "OK me #a",
    ]
    assert bob.lines() == ["ACTION #a alice waves at everyone"]
    bob.send("plain")
    quiet(alice)
    assert bob.send("/history #a") == [
        f"HISTORYACTION #a {NOW} alice waves at everyone",
        f"HISTORY #a {NOW} bob plain",
        "OK history #a",
    ]
    assert alice.send("/me")[0].startswith("ERR bad-arguments")
    assert alice.send("/me bell\x07")[0].startswith("ERR bad-arguments")


def test_me_needs_a_current_room(chat):
    """With no room left, /me is not-in-room."""
    alice = chat.logged_in("alice")
    alice.send("/part")
    assert alice.send("/me waves")[0].startswith("ERR not-in-room")


# --- /away and /whois --------------------------------------------------------------


def test_away_tells_who_messages_an_away_user(chat):
    """A DM to an away user is delivered; the sender also gets AWAY before OK msg."""
    alice, bob = chat.logged_in("alice"), chat.logged_in("bob")
    assert bob.send("/away gone fishing") == ["OK away gone fishing"]
    alice.lines()
    assert alice.send("/msg bob hi") == [
        "DM alice bob hi",
        "AWAY bob gone fishing",
        "OK msg bob delivered",
    ]
    assert bob.lines() == ["DM alice bob hi"]
    bob.close()
    quiet(alice)
    # Kept while offline, in the database.
    assert alice.send("/msg bob later") == [
        "DM alice bob later",
        "AWAY bob gone fishing",
        "OK msg bob stored",
    ]
    bob = chat.logged_in("bob")
    assert bob.send("/away") == ["OK away"]
    assert alice.send("/msg bob hi")[-2:] == ["DM alice bob hi", "OK msg bob delivered"]


def test_whois_online_offline_away_and_shared_rooms(chat):
    """WHOIS <user> online|offline <last-seen> <shared rooms>, AWAY if away, OK whois."""
    alice = in_room(chat, "alice", "#a")
    bob = in_room(chat, "bob", "#a")
    bob.send("/join #b")
    quiet(alice)
    assert alice.send("/whois BOB") == [
        f"WHOIS bob online {NOW} #a #lobby",
        "OK whois bob",
    ]
    bob.send("/away lunch")
    chat.clock.advance(60)
    bob.close()
    quiet(alice)
    later = format_timestamp((1_764_064_800 + 60) * 1000)
    assert alice.send("/whois bob") == [
        f"WHOIS bob offline {later} #a #lobby",
        "AWAY bob lunch",
        "OK whois bob",
    ]
    assert alice.send("/whois nobody") == ["ERR no-such-user there is no user nobody"]
    assert alice.send("/whois no!")[0].startswith("ERR invalid-name")
    chat.client().send("/register carol password1")
    assert alice.send("/whois carol") == ["WHOIS carol offline -", "OK whois carol"]


# --- survives a restart ----------------------------------------------------------------


def test_membership_topics_operators_bans_and_privacy_survive_a_restart(tmp_path):
    """A new server on the same database file knows everything the old one was told."""
    path = str(tmp_path / "chatd.sqlite3")
    first = ChatHarness(database=InlineDatabase(path))
    alice = in_room(first, "alice", "#a")
    bob = in_room(first, "bob", "#a")
    in_room(first, "carol", "#a")
    alice.send("/topic #a kept", "/op #a bob", "/ban #a carol", "/private #a on", "/away out")
    alice.send("/me leaves")
    for client in (alice, bob):
        client.close()
    first.database.close()

    second = ChatHarness(database=InlineDatabase(path))
    bob = second.client()
    assert bob.send("/login bob password1")[2:6] == [
        "JOIN #a bob",
        "WHO #a bob",
        "TOPIC #a alice kept",
        "OPS #a alice bob",
    ]
    carol = second.logged_in("carol")
    assert carol.send("/join #a") == ["ERR forbidden you are banned from #a"]
    dave = second.logged_in("dave")
    assert dave.send("/join #a")[0] == "ERR forbidden #a is private: you need an invitation"
    assert dave.send("/rooms") == ["ROOM #lobby 4", "OK rooms"]
    quiet(bob)
    assert bob.send("/whois alice")[1] == "AWAY alice out"
    assert bob.send("/history #a 1") == [f"HISTORYACTION #a {NOW} alice leaves", "OK history #a"]


# --- the admin command line's room changes reach a running server -----------------------


def admin(harness, action: str, room: str, user: str = "", detail: str = "") -> str:
    """Do ``chatd room <action>`` on the harness's database, as the command line does."""
    connection = harness.database.connection
    with schema.transaction(connection):
        return transactions.admin_room_change(connection, action, room, user, detail, 0)


def test_admin_room_changes_are_shown_to_live_sessions(harness):
    """op, topic, kick and ban from the command line reach members within a poll."""
    harness.chat.startService()
    alice = in_room(harness, "alice", "#a")
    bob = in_room(harness, "bob", "#a")
    alice.lines()
    admin(harness, "op", "#a", "bob")
    admin(harness, "topic", "#a", "", "set by the admin")
    admin(harness, "deop", "#a", "alice")
    harness.clock.advance(1)
    expected = ["OPS #a alice bob", "TOPIC #a *admin set by the admin", "OPS #a bob"]
    assert alice.lines() == expected and bob.lines() == expected
    admin(harness, "kick", "#a", "alice", "be nice")
    harness.clock.advance(1)
    assert alice.lines() == ["KICK #a alice *admin be nice"]
    assert alice.send("/say #a x")[0].startswith("ERR not-in-room")
    alice.send("/join #a")
    admin(harness, "ban", "#a", "alice")
    harness.clock.advance(1)
    assert alice.lines()[-1] == "KICK #a alice *admin banned"
    assert alice.send("/join #a") == ["ERR forbidden you are banned from #a"]
    admin(harness, "unban", "#a", "alice")
    assert alice.send("/join #a")[-1] == "OK join #a"
    harness.chat.stopService()


def test_admin_lobby_operator(harness):
    """An administrator may name an operator of #lobby, which then has one."""
    harness.chat.startService()
    alice, bob = harness.logged_in("alice"), harness.logged_in("bob")
    admin(harness, "op", "#lobby", "alice")
    quiet(alice)
    # Until the server polls, it goes by what it knew.
    assert bob.send("/topic #lobby mine") == ["TOPIC #lobby bob mine", "OK topic #lobby"]
    harness.clock.advance(1)
    assert bob.lines() == ["OPS #lobby alice"]
    assert bob.send("/topic #lobby mine")[0].startswith("ERR forbidden")
    quiet(alice)
    assert alice.send("/topic #lobby hers")[0] == "TOPIC #lobby alice hers"
    harness.chat.stopService()


def test_recent_history_on_join_is_bounded():
    """The joiner's history is the last HISTORY_ON_JOIN messages, actions included."""
    harness = ChatHarness()
    alice = in_room(harness, "alice", "#a")
    for n in range(HISTORY_ON_JOIN + 5):
        alice.send(f"/me n{n}")
    lines = harness.logged_in("bob").send("/join #a")
    replayed = [line for line in lines if line.startswith("HISTORYACTION ")]
    assert len(replayed) == HISTORY_ON_JOIN
    assert replayed[0].endswith(" alice n5")


# --- secret rooms (extension: IRC's +s) ------------------------------------------------


def test_a_secret_room_is_shown_to_its_members_only(chat):
    """/secret (operators only; on or off): hidden from others' /rooms and /who (as a
    private room is, no-such-room) but still open to /join; /help lists it."""
    alice = in_room(chat, "alice", "#a")
    bob = chat.logged_in("bob")
    quiet(alice)
    assert alice.send("/secret #a maybe")[0].startswith("ERR bad-arguments")
    assert alice.send("/secret #b on")[0].startswith("ERR not-in-room")
    assert alice.send("/secret #a on") == ["MODE #a alice secret on", "OK secret #a"]
    assert bob.send("/rooms") == ["ROOM #lobby 2", "OK rooms"]
    assert alice.send("/rooms") == ["ROOM #a 1", "ROOM #lobby 2", "OK rooms"]
    assert bob.send("/who #a")[0] == "ERR no-such-room nobody is in #a"
    assert bob.send("/secret #a off")[0].startswith("ERR not-in-room")
    assert bob.send("/join #a")[-1] == "OK join #a"
    assert bob.send("/secret #a off") == ["ERR forbidden only an operator of #a may do that"]
    assert bob.send("/rooms") == ["ROOM #a 2", "ROOM #lobby 2", "OK rooms"]
    carol = chat.logged_in("carol")
    assert carol.send("/rooms") == ["ROOM #lobby 3", "OK rooms"]
    quiet(alice)
    assert alice.send("/secret #a OFF") == ["MODE #a alice secret off", "OK secret #a"]
    assert carol.send("/rooms") == ["ROOM #a 2", "ROOM #lobby 3", "OK rooms"]
    assert any(line.startswith("INFO /secret <room> <on-or-off>") for line in carol.send("/help"))
