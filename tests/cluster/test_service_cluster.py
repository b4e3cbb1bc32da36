"""The core in cluster mode, without Redis: a fake fan-out, the real service, a task.Clock.

Another node's commits are made straight in the shared database (and
announced, or not, by the test), so every interleaving is chosen here.
"""

from twisted.internet import defer, task

from chatd.cluster.fanout import LocalFanout
from chatd.cluster.presence import RoomSeat, UserState
from chatd.cluster.sequencer import GAP_HOLD_SECONDS
from chatd.core.events import HistoryLine, Joined, Parted, RoomMessage, RoomMessages
from chatd.core.service import ChatService
from chatd.storage import transactions
from tests.support import InlineDatabase, RecordingClient


class FakeFanout(LocalFanout):
    """A cluster fan-out that records what the core announces; presence answers as told."""

    ordered = True

    def __init__(self) -> None:
        self.announced: list[tuple] = []
        self.elsewhere = False

    def room_message(self, room_key, message) -> None:
        self.announced.append(("msg", room_key, message.seq, message.text))

    def membership(self, room_key, room, user, joined, changed=False, reason="") -> None:
        self.announced.append(("member", room_key, user, joined))

    def tag_message(self, room_key, event) -> None:
        self.announced.append(("tag", room_key, event.tags))

    def user_arrived(self, user_key, name) -> defer.Deferred:
        return defer.succeed(self.elsewhere)

    def user_left(self, user_key) -> defer.Deferred:
        return defer.succeed(self.elsewhere)


def texts(mind: RecordingClient) -> list[str]:
    """The room messages a mind was delivered, in order."""
    found = []
    for event in mind.events:
        batch = event.messages if isinstance(event, RoomMessages) else (event,)
        found += [m.text for m in batch if isinstance(m, RoomMessage)]
    return found


def membership_of(user: str, mind: RecordingClient) -> list[type]:
    """The JOIN and PART events about ``user`` a mind was delivered, by type."""
    return [type(e) for e in mind.events if isinstance(e, (Joined, Parted)) and e.user == user]


def node(fanout=None):
    """A service on a fresh database with alice, bob and carol; its clock."""
    database = InlineDatabase()
    for name in ("alice", "bob", "carol"):
        database.write(transactions.create_user, name, "x", 0)
    clock = task.Clock()
    return ChatService(database, clock, fanout=fanout), clock


def login(service, name: str):
    """A session of ``name`` and its mind."""
    mind = RecordingClient()
    started = service.start_session(name, mind)
    return started.result, mind


def another_node_posts(service, text: str, sender: str = "carol") -> int:
    """Commit a #lobby message as another node would; its sequence number."""
    room_id = service.rooms["#lobby"].id
    return service.database.write(
        transactions.post_room_message, room_id, sender, text, 0
    ).result


def test_one_node_keeps_its_path_rooms_have_no_sequencer():
    """LocalFanout: no sequencer, nothing announced; the message shows at the turn's end."""
    service, clock = node()
    assert isinstance(service.fanout, LocalFanout)
    alice, alice_sees = login(service, "alice")
    assert service.rooms["#lobby"].sequencer is None
    posting = alice.say("hello")
    clock.advance(0)
    assert posting.result == "#lobby" and texts(alice_sees) == ["hello"]


def test_a_local_post_behind_another_nodes_commit_waits_for_it_and_its_ok_too():
    """carol (another node) committed 1, unannounced; alice's post is 2: held back, then the gap
    is read from the database, and alice sees 1 then 2 before her post is answered."""
    fanout = FakeFanout()
    service, clock = node(fanout)
    alice, alice_sees = login(service, "alice")
    assert another_node_posts(service, "from carol") == 1
    answered = []
    alice.say("from alice").addCallback(answered.append)
    clock.advance(0)
    assert answered == [] and texts(alice_sees) == []
    assert ("msg", "#lobby", 2, "from alice") in fanout.announced
    clock.advance(GAP_HOLD_SECONDS)
    clock.advance(0)
    assert texts(alice_sees) == ["from carol", "from alice"]
    assert answered == ["#lobby"]


def test_an_announcement_is_delivered_once_with_no_origin_of_this_node():
    """Another node's message announced twice reaches alice once."""
    service, clock = node(FakeFanout())
    _alice, alice_sees = login(service, "alice")
    seq = another_node_posts(service, "hi")
    message = RoomMessage("#lobby", "carol", "hi", 0, "m1", seq)
    service.announced("#lobby", message)
    service.announced("#lobby", message)
    clock.advance(0)
    assert texts(alice_sees) == ["hi"]


def test_a_room_loaded_while_its_next_message_was_announced_catches_up():
    """Announced before the room was loaded here: on loading, the node reads it back."""
    service, clock = node(FakeFanout())
    room_id = service.database.write(transactions.load_room, "#side", 0, 50).result.id
    service.database.write(transactions.add_room_message, room_id, "carol", "old", 0)
    # Committed after this node's load read the room, announced before the load finished.
    service.announced("#side", RoomMessage("#side", "carol", "late", 0, "m2", 2))
    alice, alice_sees = login(service, "alice")
    alice.join("#side")
    # The join's load read message 1 only; 2 commits (as it would have on the
    # other node) after: the node learnt of it from the announcement.
    service.database.write(transactions.add_room_message, room_id, "carol", "late", 0)
    assert texts(alice_sees) == []
    clock.advance(GAP_HOLD_SECONDS)
    clock.advance(0)
    assert texts(alice_sees) == ["late"]
    assert [e.text for e in alice_sees.events if isinstance(e, HistoryLine)] == ["old"]


def test_a_user_online_on_another_node_is_not_joined_or_parted_again():
    """Presence says alice is online elsewhere: her arrival here tells no JOIN, her departure
    no PART; without that, one JOIN and one PART, each announced for the cluster."""
    fanout = FakeFanout()
    service, _clock = node(fanout)
    _bob, bob_sees = login(service, "bob")
    fanout.elsewhere = True
    alice, _ = login(service, "alice")
    alice.logout()
    assert membership_of("alice", bob_sees) == []
    fanout.elsewhere = False
    alice, _ = login(service, "alice")
    alice.logout()
    assert membership_of("alice", bob_sees) == [Joined, Parted]
    assert ("member", "#lobby", "alice", True) in fanout.announced
    assert ("member", "#lobby", "alice", False) in fanout.announced


def test_a_dead_nodes_user_is_parted_from_each_of_its_rooms():
    """user_gone_elsewhere: PART to the members here and announced, in every room of the user."""
    fanout = FakeFanout()
    service, _clock = node(fanout)
    _bob, bob_sees = login(service, "bob")
    service.database.write(transactions.join_room, "#lobby", "carol", 0)
    service.user_gone_elsewhere("carol")
    assert [e.user for e in bob_sees.events if isinstance(e, Parted)] == ["carol"]
    assert ("member", "#lobby", "carol", False) in fanout.announced


def test_a_dead_nodes_guest_is_parted_from_the_rooms_its_node_last_told():
    """A guest remembers no rooms: user_gone_elsewhere parts it from those of the state its
    node last told (here #lobby), not from any stored membership; an account's last state
    changes nothing (its stored rooms count)."""
    fanout = FakeFanout()
    service, _clock = node(fanout)
    _bob, bob_sees = login(service, "bob")
    lobby = RoomSeat("#lobby", "#lobby", False, False)
    service.user_gone_elsewhere("visitor", UserState("visitor", "", (lobby,), guest=True))
    assert [e.user for e in bob_sees.events if isinstance(e, Parted)] == ["visitor"]
    assert ("member", "#lobby", "visitor", False) in fanout.announced
    service.user_gone_elsewhere("dave", UserState("dave", "", (lobby,)))
    assert [e.user for e in bob_sees.events if isinstance(e, Parted)] == ["visitor"]
