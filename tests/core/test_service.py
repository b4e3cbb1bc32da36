"""The chat service without any network: minds that record what they are sent."""

from chatd.core.events import (
    DirectMessage,
    HistoryLine,
    Joined,
    Members,
    Operators,
    Parted,
    RoomMessage,
    RoomMessages,
    StoredMessage,
)
from chatd.frontends.line.render import encode
from chatd.storage import transactions
from tests.support import ChatHarness, RecordingClient, SlowDatabase


def start(harness: ChatHarness, name: str) -> tuple:
    """Register ``name`` if needed and start a session with a recording mind."""
    harness.accounts.register(name, "password1").addErrback(lambda failure: None)
    mind = RecordingClient()
    sessions = []
    harness.chat.start_session(name, mind).addCallback(sessions.append)
    return sessions[0], mind


def test_first_session_joins_the_lobby():
    """A user's first session joins #lobby and is shown its members."""
    harness = ChatHarness()
    session, mind = start(harness, "alice")
    assert mind.lines() == ["JOIN #lobby alice", "WHO #lobby alice"]
    assert session.current.name == "#lobby"
    assert set(harness.chat.users) == {"alice"}


def test_events_are_encoded_once_for_every_recipient():
    """A room message reaches every session as the very same event object."""
    harness = ChatHarness()
    sessions = [start(harness, name) for name in ("alice", "bob", "carol")]
    for _, mind in sessions:
        mind.events.clear()
    sessions[0][0].say("hello")
    harness.end_turn()
    delivered = [mind.events[0] for _, mind in sessions]
    assert all(event is delivered[0] for event in delivered)
    assert isinstance(delivered[0], RoomMessage)
    assert encode(delivered[0]) == b"MSG #lobby alice hello\r\n"


def test_logout_of_the_last_session_parts_every_room():
    """When the last session ends the user leaves every room and the rooms empty out."""
    harness = ChatHarness()
    alice, _alice_mind = start(harness, "alice")
    _bob, bob_mind = start(harness, "bob")
    alice.join("#a")
    bob_mind.events.clear()
    alice.logout()
    assert [type(e) for e in bob_mind.events] == [Parted]
    assert "alice" not in harness.chat.users
    assert "#a" not in harness.chat.rooms
    assert [room.name for room in harness.chat.active_rooms()] == ["#lobby"]


def test_rooms_come_back_with_their_history():
    """A room emptied and joined again reloads its recent history from storage."""
    harness = ChatHarness()
    alice, mind = start(harness, "alice")
    alice.join("#a")
    alice.say("kept")
    harness.end_turn()
    alice.part("#a")
    mind.events.clear()
    alice.join("#A")
    lines = mind.lines()
    assert lines[:2] == ["JOIN #a alice", "WHO #a alice"]
    assert lines[2].startswith("HISTORY #a ") and lines[2].endswith(" alice kept")


def test_join_order_and_announcements():
    """JOIN reaches members already there and the joiner; WHO only the joiner."""
    harness = ChatHarness()
    _alice, alice_mind = start(harness, "alice")
    bob, bob_mind = start(harness, "bob")
    alice_mind.events.clear()
    bob_mind.events.clear()
    bob.join("#lobby")
    assert alice_mind.events == [] and bob_mind.events == []
    bob.join("#new")
    # bob created #new: he is its operator, and OPS follows WHO.
    assert [type(e) for e in bob_mind.events] == [Joined, Members, Operators]
    assert alice_mind.events == []


def test_ban_from_the_admin_command_line_closes_live_sessions():
    """The service polls account events: a ban made elsewhere ends the user's sessions."""
    harness = ChatHarness()
    harness.chat.startService()
    _alice, mind = start(harness, "alice")
    harness.database.write(transactions.set_banned, "alice", True, 0)
    harness.clock.advance(1.0)
    assert mind.closed_with == "banned"


def test_kick_closes_live_sessions():
    """A kick from the admin command line ends every session with BYE kicked."""
    harness = ChatHarness()
    harness.chat.startService()
    _alice, first = start(harness, "alice")
    _again, second = start(harness, "alice")
    harness.database.write(transactions.record_account_event, "alice", "kick", 0)
    harness.clock.advance(1.0)
    assert first.closed_with == second.closed_with == "kicked"


def test_deletion_closes_live_sessions():
    """A deleted account's sessions are closed with BYE account-deleted."""
    harness = ChatHarness()
    harness.chat.startService()
    _alice, mind = start(harness, "alice")
    harness.database.write(transactions.delete_user, "alice", 0)
    harness.clock.advance(1.0)
    assert mind.closed_with == "account-deleted"
    harness.chat.stopService()


def test_events_before_the_service_started_are_not_replayed():
    """A ban lifted long ago does not disconnect anyone at start."""
    harness = ChatHarness()
    harness.accounts.register("alice", "password1")
    harness.database.write(transactions.set_banned, "alice", True, 0)
    harness.database.write(transactions.set_banned, "alice", False, 0)
    harness.chat.startService()
    _alice, mind = start(harness, "alice")
    harness.clock.advance(5.0)
    assert mind.closed_with is None


def test_messages_committed_together_reach_each_session_in_one_write():
    """Two posts in one commit batch: one event per session, both lines in commit order."""
    harness = ChatHarness(database=SlowDatabase())
    (alice, _), (bob, _), (_, carol_mind) = (start(harness, n) for n in ("alice", "bob", "carol"))
    carol_mind.events.clear()
    harness.database.holding = True
    answered = []
    for post in (alice.say("one"), bob.say("two")):
        post.addCallback(answered.append)
    harness.database.flush()
    assert carol_mind.events == [] and answered == []
    harness.end_turn()
    [event] = carol_mind.events
    assert isinstance(event, RoomMessages) and event.count == 2
    assert encode(event) == b"MSG #lobby alice one\r\nMSG #lobby bob two\r\n"
    assert answered == ["#lobby", "#lobby"]


def test_a_member_joining_before_the_flush_sees_the_message_once():
    """Committed but not yet flushed: the joiner gets it as HISTORY, not again as MSG."""
    harness = ChatHarness(database=SlowDatabase())
    alice, alice_mind = start(harness, "alice")
    bob, bob_mind = start(harness, "bob")
    alice.join("#side")
    harness.database.holding = True
    alice.say("early", "#side")
    harness.database.flush()
    alice_mind.events.clear()
    bob.join("#side")
    harness.database.flush()
    harness.end_turn()
    kinds = [line.split(" ")[0] for line in bob_mind.lines()[-4:]]
    assert kinds == ["JOIN", "WHO", "OPS", "HISTORY"]
    assert alice_mind.lines() == ["MSG #side alice early", "JOIN #side bob"]


def begin(harness: ChatHarness, name: str) -> tuple[list, RecordingClient]:
    """Start a session of registered ``name`` that may not be ready yet: (sessions, mind).

    The list gets the session once its login has finished.
    """
    mind = RecordingClient()
    sessions: list = []
    harness.chat.start_session(name, mind).addCallback(sessions.append)
    return sessions, mind


def two_logins_while_the_lobby_loads() -> tuple:
    """alice logs in twice while the database holds the opening of #lobby.

    Returns the harness and, for each login, its session list and mind.
    """
    harness = ChatHarness(database=SlowDatabase())
    harness.accounts.register("alice", "password1")
    harness.database.holding = True
    return harness, begin(harness, "alice"), begin(harness, "alice")


def test_a_second_session_while_the_first_still_opens_the_lobby():
    """A further session that arrives while #lobby loads waits, then gets WHO and a room."""
    harness, (first, first_mind), (second, second_mind) = two_logins_while_the_lobby_loads()
    assert first == [] and second == []
    harness.commit_held()  # #lobby opens; the stored messages are read next.
    harness.commit_held()
    assert first_mind.lines() == ["JOIN #lobby alice", "WHO #lobby alice"]
    assert second_mind.lines() == ["JOIN #lobby alice", "WHO #lobby alice"]
    assert first[0].current.name == second[0].current.name == "#lobby"


def test_the_user_joins_the_lobby_though_the_first_session_went_meanwhile():
    """The first session closes while #lobby loads: the user, still online, joins it."""
    harness, (first, _first_mind), (second, second_mind) = two_logins_while_the_lobby_loads()
    harness.chat.users["alice"].sessions[0].logout()
    harness.database.holding = False
    harness.commit_held()
    assert first and not first[0].active
    lobby = harness.chat.rooms["#lobby"]
    assert "alice" in lobby.members
    assert second_mind.lines() == ["JOIN #lobby alice", "WHO #lobby alice"]
    assert second[0].current is lobby
    still_here = second[0].say("still here")
    harness.end_turn()
    assert still_here.called


def test_a_further_session_gets_unflushed_messages_once_as_history():
    """Committed, not yet flushed: a session logging in sees it as HISTORY, never as MSG."""
    harness = ChatHarness(database=SlowDatabase())
    alice, alice_mind = start(harness, "alice")
    alice_mind.events.clear()
    harness.database.holding = True
    alice.say("early")
    harness.database.flush()  # Committed and queued; the end of the turn has not come.
    again, again_mind = begin(harness, "alice")
    harness.commit_held()
    harness.end_turn()
    lines = again_mind.lines()
    assert [line.split(" ")[0] for line in lines] == ["WHO", "HISTORY"], lines
    assert lines[1].endswith(" alice early")
    assert alice_mind.lines() == ["MSG #lobby alice early"]
    assert again and again[0].current.name == "#lobby"


def test_room_messages_and_dms_carry_the_cores_id_and_the_rooms_sequence():
    """Every room message gets an id and the room's next seq; history replays both.

    Two rooms count on their own; a DM delivered live and one stored carry
    ids too; a session joining later is shown the very same ids and seqs.
    """
    harness = ChatHarness()
    alice, alice_mind = start(harness, "alice")
    _bob, bob_mind = start(harness, "bob")
    alice.join("#a")
    alice.say("one", "#lobby")
    harness.end_turn()
    alice.say("two", "#lobby")
    alice.say("elsewhere", "#a")
    harness.end_turn()
    sent = [e for e in alice_mind.events if isinstance(e, RoomMessage)]
    sent += [m for e in alice_mind.events if isinstance(e, RoomMessages) for m in e.messages]
    by_text = {message.text: message for message in sent}
    assert (by_text["one"].seq, by_text["two"].seq, by_text["elsewhere"].seq) == (1, 2, 1)
    ids = [by_text[text].message_id for text in ("one", "two", "elsewhere")]
    assert ids == sorted(ids) and len(set(ids)) == 3 and all(len(one) == 20 for one in ids)
    lobby_seen = [e for e in bob_mind.events if isinstance(e, (RoomMessage, RoomMessages))]
    assert lobby_seen[0] is by_text["one"]

    alice.message("bob", "live dm")
    (live,) = [e for e in bob_mind.events if isinstance(e, DirectMessage)]
    assert live.message_id > ids[-1]
    harness.accounts.register("carol", "password1")
    alice.message("carol", "stored dm")
    (_, carol_mind) = start(harness, "carol")
    (stored,) = [e for e in carol_mind.events if isinstance(e, StoredMessage)]
    (echo,) = [
        e for e in alice_mind.events if isinstance(e, DirectMessage) and e.text == "stored dm"
    ]
    assert stored.message_id == echo.message_id > live.message_id

    carol = harness.chat.users["carol"].sessions[0]
    carol.join("#a")
    harness.end_turn()
    (replayed,) = [e for e in carol_mind.events if isinstance(e, HistoryLine) and e.room == "#a"]
    assert (replayed.message_id, replayed.seq) == (by_text["elsewhere"].message_id, 1)
