"""The core of two cluster nodes in one process, linked by an in-memory bus instead of Redis.

Each node is a real ``ChatService`` on one shared database (as the nodes of
a cluster share PostgreSQL) and one ``task.Clock``; its fan-out hands what
it announces to the other node at the next ``pump`` (as Redis would,
later), and can lose announcements on purpose (``bus.lost``). Covered:
``WHO``/``WHOIS`` across nodes (presence), kicks, bans, topic and operator
changes made on one node reaching the other's sessions (room events,
announced, with the database poll as the fallback), password changes and
deletions ending sessions on every node, and a user's ``/join``/``/part``
on one node moving its sessions on the other.
"""

import dataclasses

import pytest
from twisted.internet import defer, task

from chatd.cluster.fanout import LocalFanout
from chatd.cluster.presence import ClusterPresence, RoomSeat, UserState
from chatd.core.errors import ChatError
from chatd.core.events import (
    Invited,
    Joined,
    Kicked,
    Members,
    Operators,
    Parted,
    RoomMessage,
    RoomModeChanged,
    Topic,
)
from chatd.core.interfaces import DisconnectReason
from chatd.core.service import ChatService
from chatd.storage import transactions
from tests.support import InlineDatabase, RecordingClient

POLL_SECONDS = 30.0


class Bus:
    """What Redis is to the nodes: announcements handed on later, or lost when told to."""

    def __init__(self) -> None:
        self.fanouts: list[LinkedFanout] = []
        self.pending: list = []
        # Kinds of announcement lost on the way ("events", "member", "where").
        self.lost: set[str] = set()

    def send(self, origin: "LinkedFanout", kind: str, hand_on) -> None:
        if kind in self.lost:
            return
        for fanout in self.fanouts:
            if fanout is not origin:
                self.pending.append((hand_on, fanout))


class LinkedFanout(LocalFanout):
    """A cluster fan-out on a ``Bus``: presence kept per node, as RedisFanout keeps it."""

    ordered = True

    def __init__(self, bus: Bus, node: str) -> None:
        self.bus = bus
        self.node = node
        self.service = None
        self.presence = ClusterPresence()
        bus.fanouts.append(self)

    def attach(self, service) -> None:
        self.service = service

    def room_message(self, room_key, message) -> None:
        elsewhere = dataclasses.replace(message, origin=None)
        self.bus.send(self, "msg", lambda f: f.service.announced(room_key, elsewhere))

    def membership(self, room_key, room, user, joined, changed=False, reason="") -> None:
        self.bus.send(self, "member", lambda f: f.service.membership_announced(
            room_key, user, joined, room, changed, reason
        ))

    def user_state(self, user_key, state) -> None:
        node = self.node
        self.bus.send(self, "where", lambda f: f.presence.set(node, user_key, state))

    def account_event(self, event_id) -> None:
        self.bus.send(self, "events", lambda f: f.service.account_events_announced(event_id))

    def _elsewhere(self, user_key: str) -> defer.Deferred:
        others = (f for f in self.bus.fanouts if f is not self)
        return defer.succeed(any(user_key in f.service.users for f in others))

    def user_arrived(self, user_key, name) -> defer.Deferred:
        return self._elsewhere(user_key)

    def user_left(self, user_key) -> defer.Deferred:
        return self._elsewhere(user_key)


class Cluster:
    """Two nodes, ``a`` and ``b``, on one database, one clock and one bus."""

    def __init__(self) -> None:
        self.database = InlineDatabase()
        for name in ("alice", "bob", "carol", "dave"):
            self.database.write(transactions.create_user, name, "x", 0)
        self.clock = task.Clock()
        self.bus = Bus()
        self.a = self._node("a")
        self.b = self._node("b")

    def _node(self, name: str) -> ChatService:
        service = ChatService(
            self.database, self.clock, account_poll_seconds=POLL_SECONDS,
            fanout=LinkedFanout(self.bus, name),
        )
        service.startService()
        return service

    def pump(self) -> None:
        """Run the turns and hand on the announcements until nothing is left to do."""
        for _ in range(100):
            self.clock.advance(0)
            if not self.bus.pending:
                return
            pending, self.bus.pending = self.bus.pending, []
            for hand_on, fanout in pending:
                hand_on(fanout)
        raise AssertionError("the nodes kept announcing")


@pytest.fixture
def cluster() -> Cluster:
    """Two linked nodes; stopped after the test."""
    linked = Cluster()
    yield linked
    for service in (linked.a, linked.b):
        service.stopService()


def login(cluster: Cluster, node: ChatService, name: str):
    """A session of ``name`` on ``node`` and its mind, once the nodes have heard of it."""
    mind = RecordingClient()
    session = node.start_session(name, mind).result
    cluster.pump()
    return session, mind


def of_type(mind: RecordingClient, kind) -> list:
    """The events of one type a mind was delivered."""
    return [event for event in mind.events if isinstance(event, kind)]


def side_room_with(cluster: Cluster):
    """alice on node a opens #side (its operator); bob on node b joins it there."""
    alice, alice_sees = login(cluster, cluster.a, "alice")
    bob, bob_sees = login(cluster, cluster.b, "bob")
    alice.join("#side")
    cluster.pump()
    bob.join("#side")
    cluster.pump()
    return alice, alice_sees, bob, bob_sees


# --- the presence mirror -------------------------------------------------------


def _state(name: str, *rooms: tuple[str, bool], away: str = "") -> UserState:
    return UserState(name, away, tuple(RoomSeat(r.lower(), r, op, False) for r, op in rooms))


def test_presence_counts_a_user_on_two_nodes_once_until_both_let_it_go():
    """One user listed by two nodes: one member; still one after the first drops it; none
    after the second; a node forgotten takes its users with it, and only its own."""
    presence = ClusterPresence()
    presence.set("n1", "bob", _state("Bob", ("#side", True)))
    presence.set("n2", "bob", _state("Bob", ("#side", True)))
    presence.set("n2", "dave", _state("dave", ("#side", False), away="lunch"))
    assert presence.members("#side") == {"bob": ("Bob", True), "dave": ("dave", False)}
    presence.set("n1", "bob", None)
    assert set(presence.members("#side")) == {"bob", "dave"}
    assert presence.user("dave").away == "lunch"
    assert presence.keep_only(["n1"]) == ["n2"]
    assert presence.members("#side") == {} and presence.room_keys() == []
    assert presence.user("bob") is None and presence.users() == {}


def test_presence_replaces_a_nodes_list_whole_and_follows_moves_between_rooms():
    """A node's whole list replaces what was known of it; a user's new state moves it."""
    presence = ClusterPresence()
    presence.set("n1", "bob", _state("bob", ("#a", False)))
    presence.set("n1", "bob", _state("bob", ("#b", False)))
    assert presence.members("#a") == {} and set(presence.members("#b")) == {"bob"}
    presence.replace_node("n1", {"carol": _state("carol", ("#c", True))})
    assert presence.room_keys() == ["#c"] and presence.users() == {"carol": "carol"}
    assert presence.room("#c").room_name == "#c"
    assert UserState.from_wire(presence.user("carol").to_wire()) == presence.user("carol")


# --- WHO, NAMES and WHOIS across nodes -----------------------------------------


def test_who_lists_the_members_on_both_nodes_and_marks_the_operators(cluster):
    """alice on a, bob on b, both in #lobby and #side (alice its operator): WHO on either
    node lists both, alice marked; bob's join on b was shown alice as a member."""
    alice, _alice_sees, bob, bob_sees = side_room_with(cluster)
    for session in (alice, bob):
        lobby = session.who("#lobby")
        assert lobby.members == ("alice", "bob")
        side = session.who("#side")
        assert (side.members, side.operators) == (("alice", "bob"), ("alice",))
    members = [e.members for e in of_type(bob_sees, Members) if e.room == "#side"]
    assert members == [("alice", "bob")]


def test_who_of_a_room_whose_members_are_all_elsewhere(cluster):
    """carol on b asks about #side, where only alice (on a) is: listed, operator marked;
    once #side is private, carol (no member) is told nobody is in it, as on one node."""
    alice, _ = login(cluster, cluster.a, "alice")
    carol, _ = login(cluster, cluster.b, "carol")
    alice.join("#side")
    cluster.pump()
    assert "#side" not in cluster.b.rooms
    roster = carol.who("#side")
    assert (roster.room, roster.members, roster.operators) == ("#side", ("alice",), ("alice",))
    alice.set_private("#side", True)
    cluster.pump()
    with pytest.raises(ChatError) as refused:
        carol.who("#side")
    assert refused.value.code == "no-such-room"


def test_whois_and_away_of_a_user_on_another_node(cluster):
    """bob on b is away: alice's /whois on a says online, with bob's away text."""
    alice, _ = login(cluster, cluster.a, "alice")
    bob, _ = login(cluster, cluster.b, "bob")
    bob.away("lunch")
    cluster.pump()
    info = alice.whois("bob").result
    assert (info.online, info.away) == (True, "lunch")
    assert cluster.a.away_of("bob") == "lunch" and cluster.a.is_online("bob")
    bob.logout()
    cluster.pump()
    info = alice.whois("bob").result
    assert not info.online and alice.who("#lobby").members == ("alice",)


def test_join_and_part_are_told_once_for_the_cluster(cluster):
    """dave on b sees bob arrive once and leave once, though bob has a session on each
    node; WHO lists bob while either session lasts."""
    _dave, dave_sees = login(cluster, cluster.b, "dave")
    bob_a, _ = login(cluster, cluster.a, "bob")
    bob_b, _ = login(cluster, cluster.b, "bob")
    bob_b.logout()
    cluster.pump()
    assert "bob" in _dave.who("#lobby").members
    bob_a.logout()
    cluster.pump()
    joined = [e.user for e in of_type(dave_sees, Joined) if e.user == "bob"]
    parted = [e.user for e in of_type(dave_sees, Parted) if e.user == "bob"]
    assert joined == ["bob"] and parted == ["bob"]
    assert _dave.who("#lobby").members == ("dave",)


# --- moderation reaching every node ----------------------------------------------


def test_a_kick_on_one_node_takes_the_users_sessions_on_the_other_out(cluster):
    """alice (operator, node a) kicks bob (node b only): bob's session and dave's on b get
    the KICK once, by alice, at once (the announcement); bob can no longer say anything
    there; the polls that follow tell nobody twice."""
    alice, alice_sees, bob, bob_sees = side_room_with(cluster)
    dave, dave_sees = login(cluster, cluster.b, "dave")
    dave.join("#side")
    cluster.pump()
    assert alice.kick("#side", "bob", "spam").result == "#side"
    cluster.pump()
    for mind in (alice_sees, bob_sees, dave_sees):
        kicks = [(e.room, e.user, e.by, e.reason) for e in of_type(mind, Kicked)]
        assert kicks == [("#side", "bob", "alice", "spam")]
    assert "#side" not in bob.user.rooms
    with pytest.raises(ChatError) as refused:
        bob.say("still here", "#side")
    assert refused.value.code == "not-in-room"
    cluster.clock.advance(POLL_SECONDS)
    cluster.pump()
    assert len(of_type(alice_sees, Kicked)) == len(of_type(dave_sees, Kicked)) == 1
    assert alice.who("#side").members == ("alice", "dave")


def test_without_the_announcement_the_poll_still_brings_the_kick(cluster):
    """The announcement lost (Redis away): node b learns of the kick at its next poll."""
    alice, _, bob, bob_sees = side_room_with(cluster)
    cluster.bus.lost.add("events")
    assert alice.kick("#side", "bob", "").result == "#side"
    cluster.pump()
    assert "#side" in bob.user.rooms and of_type(bob_sees, Kicked) == []
    cluster.clock.advance(POLL_SECONDS)
    cluster.pump()
    assert "#side" not in bob.user.rooms
    assert [e.by for e in of_type(bob_sees, Kicked)] == ["alice"]


def test_a_ban_on_one_node_keeps_the_user_out_on_the_other(cluster):
    """A ban on node a: bob is out on node b at once, and refused when joining again there."""
    alice, _, bob, bob_sees = side_room_with(cluster)
    assert alice.ban("#side", "bob", True).result == "#side"
    cluster.pump()
    assert [(e.user, e.reason) for e in of_type(bob_sees, Kicked)] == [("bob", "banned")]
    assert "#side" not in bob.user.rooms
    failure = []
    bob.join("#side").addErrback(failure.append)
    assert failure and failure[0].value.code == "forbidden"


def test_topic_and_operators_changed_on_one_node_show_on_the_other(cluster):
    """alice makes bob an operator and sets the topic on node a: bob's session on node b
    sees both, by alice, and node b's WHO marks bob; bob may now kick there."""
    alice, _, bob, bob_sees = side_room_with(cluster)
    assert alice.set_operator("#side", "bob", True).result == "#side"
    assert alice.set_topic("#side", "hello").result == "#side"
    cluster.pump()
    assert [e.operators for e in of_type(bob_sees, Operators)][-1] == ("alice", "bob")
    assert [(e.setter, e.text) for e in of_type(bob_sees, Topic)][-1] == ("alice", "hello")
    assert bob.who("#side").operators == ("alice", "bob")
    assert alice.who("#side").operators == ("alice", "bob")


def test_a_room_made_private_on_one_node_is_private_on_the_other(cluster):
    """#side is loaded on node b too (bob is in it there): once alice makes it private on
    node a, carol (no member, on b) is told nobody is in it, as on one node."""
    alice, _, _bob, _ = side_room_with(cluster)
    carol, _ = login(cluster, cluster.b, "carol")
    assert carol.who("#side").members == ("alice", "bob")
    assert alice.set_private("#side", True).result == "#side"
    cluster.pump()
    assert cluster.b.rooms["#side"].private
    with pytest.raises(ChatError) as refused:
        carol.who("#side")
    assert refused.value.code == "no-such-room"
    assert alice.set_private("#side", False).result == "#side"
    cluster.pump()
    assert carol.who("#side").members == ("alice", "bob")


def test_an_invitation_on_one_node_reaches_the_users_session_on_the_other(cluster):
    """alice (node a) invites carol, whose session is on node b: carol is shown it at
    once, and not again at her next login (it was delivered)."""
    alice, _, _bob, _ = side_room_with(cluster)
    carol, carol_sees = login(cluster, cluster.b, "carol")
    assert alice.invite("#side", "carol").result == "#side"
    cluster.pump()
    assert [(e.room, e.by) for e in of_type(carol_sees, Invited)] == [("#side", "alice")]
    carol.logout()
    cluster.pump()
    _carol, again = login(cluster, cluster.a, "carol")
    assert of_type(again, Invited) == []
    cluster.clock.advance(POLL_SECONDS)
    cluster.pump()
    assert len(of_type(carol_sees, Invited)) == 1


def test_a_password_change_ends_the_users_sessions_on_every_node(cluster):
    """bob changes his password in a session on node a: his session there stays, his other
    session on a and his session on b end at once (BYE password-changed)."""
    bob_a, _ = login(cluster, cluster.a, "bob")
    _other_a, other_a_sees = login(cluster, cluster.a, "bob")
    _bob_b, bob_b_sees = login(cluster, cluster.b, "bob")
    identity = cluster.database.write(transactions.find_account, "bob").result.identity
    event_id = cluster.database.write(
        transactions.change_password_hash, identity, "new", 1
    ).result
    bob_a.password_changed(event_id)
    cluster.pump()
    assert other_a_sees.closed_with == bob_b_sees.closed_with == DisconnectReason.PASSWORD_CHANGED
    assert bob_a.active and cluster.a.users["bob"].sessions == [bob_a]
    assert "bob" not in cluster.b.users


def test_an_account_deleted_by_the_admin_ends_its_sessions_on_every_node(cluster):
    """The admin command line deletes bob and announces it: both nodes end bob's sessions
    at once, not at their next poll."""
    _bob_a, bob_a_sees = login(cluster, cluster.a, "bob")
    _bob_b, bob_b_sees = login(cluster, cluster.b, "bob")
    cluster.database.write(transactions.delete_user, "bob", 1)
    for node in (cluster.a, cluster.b):
        node.account_events_announced(None)
    cluster.pump()
    assert bob_a_sees.closed_with == bob_b_sees.closed_with == DisconnectReason.ACCOUNT_DELETED


# --- a user's /join and /part move its sessions on every node ---------------------


def test_join_on_one_node_joins_the_users_sessions_on_the_other(cluster):
    """bob has a session on each node; his /join #side on node a: his session on b is
    told JOIN and may speak there, carol on b sees one JOIN, and WHO on b lists bob."""
    carol, carol_sees = login(cluster, cluster.b, "carol")
    carol.join("#side")
    bob_a, _ = login(cluster, cluster.a, "bob")
    bob_b, bob_b_sees = login(cluster, cluster.b, "bob")
    assert bob_a.join("#side").result == "#side"
    cluster.pump()
    assert [e.room for e in of_type(bob_b_sees, Joined) if e.user == "bob"] == ["#side"]
    joins = [e.room for e in of_type(carol_sees, Joined) if e.user == "bob"]
    assert joins == ["#lobby", "#side"]
    assert "#side" in bob_b.user.rooms
    assert carol.who("#side").members == ("bob", "carol")
    said = []
    bob_b.say("from b", "#side").addCallback(said.append)
    cluster.pump()
    assert said == ["#side"]
    said = [e.text for e in of_type(carol_sees, RoomMessage) if e.room == "#side"]
    assert said == ["from b"]


def test_part_on_one_node_parts_the_users_sessions_on_the_other(cluster):
    """bob's /part #side on node a: his session on b leaves #side too (PART), carol on b
    sees one PART, and WHO there no longer lists him."""
    carol, carol_sees = login(cluster, cluster.b, "carol")
    carol.join("#side")
    bob_a, _ = login(cluster, cluster.a, "bob")
    bob_b, bob_b_sees = login(cluster, cluster.b, "bob")
    assert bob_a.join("#side").result == "#side"
    cluster.pump()
    assert bob_a.part("#side").result == "#side"
    cluster.pump()
    assert "#side" not in bob_b.user.rooms
    assert [e.room for e in of_type(bob_b_sees, Parted) if e.user == "bob"] == ["#side"]
    assert [e.room for e in of_type(carol_sees, Parted) if e.user == "bob"] == ["#side"]
    assert carol.who("#side").members == ("carol",)


def test_a_part_reason_reaches_the_other_node_and_the_users_own_sessions_there(cluster):
    """bob parts #side on node b saying why: alice (node a) sees the PART with the reason;
    bob's own session on node a leaves the room with the same reason."""
    _alice, alice_sees, bob, _bob_sees = side_room_with(cluster)
    _bob_there, bob_there_sees = login(cluster, cluster.a, "bob")
    bob.part("#side", "off to lunch")
    cluster.pump()
    parts = [(e.room, e.user, e.reason) for e in of_type(alice_sees, Parted)]
    assert parts == [("#side", "bob", "off to lunch")]
    own = [(e.room, e.reason) for e in of_type(bob_there_sees, Parted)]
    assert own == [("#side", "off to lunch")]


def test_invisibility_is_told_with_a_users_state_and_known_per_node():
    """A user's +i rides its state on the wire (a state without it, from an older node, is
    visible); the user counts as invisible while any node says a session there is."""
    state = UserState("bob", "", (RoomSeat("#a", "#a", False, False),), invisible=True)
    assert state.to_wire()[3] == 1 and UserState.from_wire(state.to_wire()) == state
    assert UserState.from_wire(["bob", "", []]).invisible is False
    presence = ClusterPresence()
    presence.set("n1", "bob", UserState("bob", "", ()))
    assert presence.invisible("bob") is False
    presence.set("n2", "bob", state)
    assert presence.invisible("bob") is True
    assert presence.forget_node("n2") == {"bob": state}, "the last word on where bob was"
    assert presence.invisible("bob") is False and presence.invisible("nobody") is False


def test_a_session_made_invisible_is_told_to_the_other_node_until_it_ends(cluster):
    """bob has two sessions on node b; one sets +i: node a counts him invisible; when that
    session ends (the other stays), node a is told he is visible again."""
    _alice, _ = login(cluster, cluster.a, "alice")
    invisible, _ = login(cluster, cluster.b, "bob")
    _visible, _ = login(cluster, cluster.b, "bob")
    assert cluster.a.is_invisible("bob") is False
    invisible.set_invisible(True)
    cluster.pump()
    assert cluster.a.is_invisible("bob") is True and cluster.b.is_invisible("bob") is True
    invisible.logout()
    cluster.pump()
    assert cluster.a.is_invisible("bob") is False and cluster.a.is_online("bob")


def test_voice_and_moderated_on_one_node_hold_on_the_other(cluster):
    """alice makes #side moderated on node a: bob may not speak there on node b; voiced by
    her, he may; -m on node a lets carol (node b, not voiced) speak again."""
    alice, _, bob, _ = side_room_with(cluster)
    carol, _ = login(cluster, cluster.b, "carol")
    carol.join("#side")
    cluster.pump()
    assert alice.set_moderated("#side", True).result == "#side"
    cluster.pump()
    with pytest.raises(ChatError) as refused:
        bob.say("hello?", "#side")
    assert refused.value.code == "forbidden"
    assert alice.set_voice("#side", "bob", True).result == "#side"
    cluster.pump()
    assert cluster.b.rooms["#side"].voiced == {"bob": "bob"}
    failures = []
    bob.say("hello", "#side").addErrback(failures.append)
    assert alice.set_moderated("#side", False).result == "#side"
    cluster.pump()
    carol.say("me too", "#side").addErrback(failures.append)
    cluster.pump()
    assert failures == [] and cluster.b.rooms["#side"].moderated is False


def test_a_secret_room_is_hidden_on_every_node(cluster):
    """alice on a makes #side secret: dave on b (no member; b has #side loaded for bob)
    is told nobody is in it, as carol on a is, at once (a room event announced), and
    the presence mirror carries the flag (a seat of four, from an older node, is not
    secret); with the announcement lost, b's poll shows the -s later."""
    alice, _alice_sees, bob, _bob_sees = side_room_with(cluster)
    carol, _ = login(cluster, cluster.a, "carol")
    dave, _ = login(cluster, cluster.b, "dave")
    alice.set_secret("#side", True)
    cluster.pump()
    assert cluster.b.rooms["#side"].secret
    for outsider in (carol, dave):
        with pytest.raises(ChatError) as refused:
            outsider.who("#side")
        assert refused.value.code == "no-such-room"
    assert bob.who("#side").secret
    seat = cluster.b.fanout.presence.room("#side")
    assert seat.secret and seat.hidden
    wire = cluster.a.state_of(cluster.a.users["alice"]).to_wire()
    assert UserState.from_wire(wire).rooms == cluster.a.state_of(cluster.a.users["alice"]).rooms
    old = ["alice", "", [["#side", "#side", 1, 0]]]
    assert UserState.from_wire(old).rooms == (RoomSeat("#side", "#side", True, False, False),)
    cluster.bus.lost.add("events")
    alice.set_secret("#side", False)
    cluster.pump()
    assert cluster.b.rooms["#side"].secret
    cluster.clock.advance(POLL_SECONDS)
    cluster.pump()
    assert not cluster.b.rooms["#side"].secret
    assert dave.who("#side").members == ("alice", "bob")


def test_who_of_a_secret_room_whose_members_are_all_elsewhere(cluster):
    """Only alice (on a) is in #solo, secret: carol on b, where #solo is not loaded, is told
    nobody is in it, from the presence mirror's seat."""
    alice, _ = login(cluster, cluster.a, "alice")
    carol, _ = login(cluster, cluster.b, "carol")
    alice.join("#solo")
    cluster.pump()
    assert carol.who("#solo").members == ("alice",)
    alice.set_secret("#solo", True)
    cluster.pump()
    assert "#solo" not in cluster.b.rooms
    with pytest.raises(ChatError) as refused:
        carol.who("#solo")
    assert refused.value.code == "no-such-room"


def test_every_mode_change_on_one_node_is_told_to_members_on_both(cluster):
    """alice (node a) switches each of #side's features and voices, bans and unbans: bob
    (node b) and alice herself are delivered one RoomModeChanged per change, by alice, in
    order; a member banned is told the ban before its KICK."""
    alice, alice_sees, _bob, bob_sees = side_room_with(cluster)
    carol, carol_sees = login(cluster, cluster.b, "carol")
    carol.join("#side")
    login(cluster, cluster.b, "dave")[0].logout()
    cluster.pump()
    changes = [
        (alice.set_private, (True,)), (alice.set_secret, (True,)),
        (alice.set_moderated, (True,)), (alice.set_topic_open, (True,)),
        (alice.set_voice, ("bob", True)), (alice.ban, ("dave", True)),
        (alice.ban, ("dave", False)), (alice.set_topic_open, (False,)),
        (alice.set_private, (False,)),
    ]
    for change, arguments in changes:
        assert change("#side", *arguments).result == "#side"
        cluster.pump()
    expected = [
        ("private", True, ""), ("secret", True, ""), ("moderated", True, ""),
        ("topic-open", True, ""), ("voice", True, "bob"), ("ban", True, "dave"),
        ("ban", False, "dave"), ("topic-open", False, ""), ("private", False, ""),
    ]
    for mind in (alice_sees, bob_sees):
        told = of_type(mind, RoomModeChanged)
        assert [(e.feature, e.on, e.user) for e in told] == expected
        assert {(e.room, e.by) for e in told} == {("#side", "alice")}
    assert alice.ban("#side", "carol", True).result == "#side"
    cluster.pump()
    for mind in (alice_sees, bob_sees, carol_sees):
        last = [e for e in mind.events if isinstance(e, RoomModeChanged | Kicked)][-2:]
        assert [type(e) for e in last] == [RoomModeChanged, Kicked]
        assert (last[0].feature, last[0].on, last[0].user) == ("ban", True, "carol")
        assert (last[1].user, last[1].reason) == ("carol", "banned")


def test_server_operator_status_rides_the_users_state_to_the_other_node(cluster):
    """alice becomes a server operator on node a: node b counts her one (WHO's * and
    WHOIS's 313 there), while her session on b gets no powers from it; a state from a node
    before ``oper`` (four fields) is none; given up on a, b forgets it."""
    alice, _ = login(cluster, cluster.a, "alice")
    alice_there, _ = login(cluster, cluster.b, "alice")
    assert cluster.b.is_oper("alice") is False
    alice.set_oper(True)
    cluster.pump()
    assert cluster.b.is_oper("alice") is True and cluster.a.is_oper("alice") is True
    assert alice_there.oper is False
    state = cluster.a.state_of(cluster.a.users["alice"])
    assert state.oper and UserState.from_wire(state.to_wire()) == state
    assert UserState.from_wire(["alice", "", [], 0]).oper is False
    assert UserState.from_wire(["alice", "", [], 0, 1]).guest is False
    assert UserState.from_wire(["visitor", "", [], 0, 0, 1]).guest is True
    assert cluster.b.is_guest("alice") is False and cluster.b.is_guest("nobody") is False
    alice.set_oper(False)
    cluster.pump()
    assert cluster.b.is_oper("alice") is False
