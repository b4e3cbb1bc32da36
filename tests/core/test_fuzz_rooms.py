"""A Hypothesis state machine: users, sessions, rooms and messages against a simple model.

The model is a few sets and lists: who is in which room, which sessions each
user has, each session's current room, the messages each session should
have been shown, and the direct messages stored for users who are away.
After every step, every live session must have been shown exactly the room
messages and direct messages the model predicts, in the same order: each
member sees each room message exactly once, in per-sender order, and
nothing reaches a non-member.
"""

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    rule,
)

from chatd.config import Config
from tests.support import ChatHarness

USERS = ("ann", "bob", "cat")
ROOMS = ("#lobby", "#a", "#b")
texts = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=20
).filter(lambda text: not text.startswith("/") and text.strip(" ") == text and text != "")


class Session:
    """The model's view of one connection."""

    def __init__(self, user: str, client) -> None:
        self.user = user
        self.client = client
        self.current: str | None = None
        self.expected: list[str] = []
        self.alive = True

    def __repr__(self) -> str:
        return f"Session({self.user}, current={self.current})"


class ChatModel(RuleBasedStateMachine):
    """Drive the real protocol and service through the harness; compare with the model."""

    sessions = Bundle("sessions")

    def __init__(self) -> None:
        super().__init__()
        self.harness = ChatHarness(Config(bcrypt_rounds=4, rate_limit=None))
        registrar = self.harness.client()
        for user in USERS:
            assert registrar.send(f"/register {user} password1") == [f"OK register {user}"]
        registrar.close()
        # user -> rooms in the order joined (the last is the most recent), while online.
        self.rooms_of: dict[str, list[str]] = {user: [] for user in USERS}
        # user -> rooms they are a member of, online or not: until /part.
        self.remembered: dict[str, list[str]] = {user: [] for user in USERS}
        self.live: dict[str, list[Session]] = {user: [] for user in USERS}
        self.stored: dict[str, list[str]] = {user: [] for user in USERS}
        self.counter = 0

    # --- helpers --------------------------------------------------------------

    def members(self, room: str) -> list[str]:
        """The model's members of ``room``, sorted."""
        return sorted(user for user in USERS if room in self.rooms_of[user])

    def show(self, users, line: str) -> None:
        """Expect ``line`` on every live session of ``users``."""
        for user in users:
            for session in self.live[user]:
                session.expected.append(line)

    def unique(self, text: str) -> str:
        """``text`` made unique, so a doubled or misplaced line cannot hide."""
        self.counter += 1
        return f"{text} #{self.counter}"

    def final(self, session: Session, line: str) -> str:
        """Send ``line``; return its one final reply, keeping the MSG/DM lines it brought."""
        out = session.client.send(line)
        finals = [reply for reply in out if reply.startswith(("OK ", "ERR "))]
        assert len(finals) == 1 and out[-1] == finals[0], out
        session.seen = [reply for reply in out if reply.startswith(("MSG ", "DM "))]
        return finals[0]

    def leave(self, user: str, room: str) -> None:
        """``user`` parts ``room``; sessions that had it current move to the latest."""
        self.rooms_of[user].remove(room)
        self.remembered[user].remove(room)
        for session in self.live[user]:
            if session.current == room:
                session.current = self.rooms_of[user][-1] if self.rooms_of[user] else None

    # --- rules -------------------------------------------------------------------

    @rule(target=sessions, user=st.sampled_from(USERS))
    def log_in(self, user):
        """A new session; the user's first joins #lobby and their other rooms, gets stored DMs."""
        client = self.harness.client()
        session = Session(user, client)
        out = client.send(f"/login {user} password1")
        assert out[-1] == f"OK login {user}", out
        first = not self.live[user]
        if first:
            others = [room for room in self.remembered[user] if room != "#lobby"]
            self.remembered[user] = ["#lobby", *others]
            self.rooms_of[user] = list(self.remembered[user])
        # A further session's current room is the user's latest (none if they left all).
        session.current = self.rooms_of[user][-1] if self.rooms_of[user] else None
        stored = [line.split(" ", 2)[2] for line in out if line.startswith("STORED ")]
        assert stored == self.stored[user]
        self.stored[user] = []
        self.live[user].append(session)
        return session

    @rule(session=consumes(sessions))
    def close(self, session):
        """The connection drops; a user's last session leaves every room, remembering them."""
        if not session.alive:
            return
        session.client.close()
        session.alive = False
        self.live[session.user].remove(session)
        if not self.live[session.user]:
            self.rooms_of[session.user] = []

    @rule(session=sessions, room=st.sampled_from(ROOMS))
    def join(self, session, room):
        """Join (or make current) a room."""
        if not session.alive:
            return
        assert self.final(session, f"/join {room}") == f"OK join {room}"
        if room not in self.rooms_of[session.user]:
            self.rooms_of[session.user].append(room)
            self.remembered[session.user].append(room)
        session.current = room

    @rule(session=sessions, room=st.one_of(st.none(), st.sampled_from(ROOMS)))
    def part(self, session, room):
        """Leave the named or current room."""
        if not session.alive:
            return
        target = room or session.current
        reply = self.final(session, f"/part {room}" if room else "/part")
        if target is None or target not in self.rooms_of[session.user]:
            assert reply.startswith("ERR not-in-room"), reply
            return
        assert reply == f"OK part {target}"
        self.leave(session.user, target)

    @rule(session=sessions, text=texts, named=st.one_of(st.none(), st.sampled_from(ROOMS)))
    def say(self, session, text, named):
        """Say something in the current room, or in a named one with /say."""
        if not session.alive:
            return
        text = self.unique(text)
        room = named or session.current
        reply = self.final(session, f"/say {named} {text}" if named else text)
        if room is None or room not in self.rooms_of[session.user]:
            assert reply.startswith("ERR not-in-room"), reply
            return
        assert reply == f"OK say {room}"
        self.show(self.members(room), f"MSG {room} {session.user} {text}")

    @rule(session=sessions, recipient=st.sampled_from(USERS), text=texts)
    def message(self, session, recipient, text):
        """A direct message: shown to both users' sessions, or stored for an absent one."""
        if not session.alive:
            return
        text = self.unique(text)
        reply = self.final(session, f"/msg {recipient} {text}")
        line = f"DM {session.user} {recipient} {text}"
        if self.live[recipient]:
            assert reply == f"OK msg {recipient} delivered"
            self.show({session.user, recipient}, line)
        else:
            assert reply == f"OK msg {recipient} stored"
            self.show({session.user}, line)
            self.stored[recipient].append(f"{session.user} {text}")

    @rule(session=sessions, room=st.sampled_from(ROOMS))
    def who(self, session, room):
        """/who lists exactly the model's members, for any session."""
        if not session.alive:
            return
        out = session.client.send(f"/who {room}")
        members = self.members(room)
        if members:
            # OPS (the room's creator, if still a member) may follow WHO.
            listed = [line for line in out if not line.startswith("OPS ")]
            assert listed[-2:] == [f"WHO {room} {' '.join(members)}", f"OK who {room}"], out
        else:
            assert out[-1].startswith("ERR no-such-room"), out
        session.seen = [reply for reply in out if reply.startswith(("MSG ", "DM "))]

    # --- what must always hold ---------------------------------------------------------

    @invariant()
    def everyone_saw_exactly_what_the_model_says(self):
        """Each live session's MSG and DM lines so far are the model's, in order, once each."""
        for sessions in self.live.values():
            for session in sessions:
                pending = session.client.lines()
                seen = getattr(session, "seen", []) + [
                    line for line in pending if line.startswith(("MSG ", "DM "))
                ]
                session.seen = []
                assert seen == session.expected, (session, seen, session.expected)
                session.expected = []

    @invariant()
    def the_service_agrees_on_membership(self):
        """The service's rooms hold exactly the model's members."""
        service = self.harness.chat
        for room in ROOMS:
            found = service.rooms.get(room)
            names = sorted(found.members) if found is not None else []
            assert names == self.members(room), room


ChatModel.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=40,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_rooms_sessions_and_membership_match_the_model = ChatModel.TestCase
