"""What the client learns from server lines: rooms, people, current room, prompt."""

from __future__ import annotations

from chatd.client.lines import parse_server_line
from chatd.client.state import ChatState, PromptView


def feed(state: ChatState, *raw_lines: str, command: str | None = None) -> None:
    """Let the state observe server lines, all answering ``command``."""
    for raw in raw_lines:
        state.observe(parse_server_line(raw), command)


def logged_in_state() -> ChatState:
    """A state after alice's first login: in #lobby with bob."""
    state = ChatState()
    state.set_connected(True)
    feed(
        state,
        "JOIN #lobby alice",
        "WHO #lobby alice bob",
        "HISTORY #lobby 2026-11-25T10:00:00.000Z bob hi",
        "OK login alice",
        command="/login alice secret",
    )
    return state


def test_login_names_the_user_and_enters_the_lobby() -> None:
    """The JOIN before OK login is recognised as our own, although the name comes later."""
    state = logged_in_state()
    assert state.user == "alice"
    assert state.rooms() == ["#lobby"]
    assert state.current_room == "#lobby"
    assert state.members("#lobby") == ["alice", "bob"]


def test_a_further_session_learns_its_rooms_from_who() -> None:
    """A second session gets WHO lines without JOINs; they are its rooms."""
    state = ChatState()
    feed(
        state, "WHO #lobby alice", "WHO #dev alice bob", "OK login alice", command="/login alice x"
    )
    assert state.rooms() == ["#lobby", "#dev"]
    assert state.current_room == "#dev"


def test_join_and_part_move_the_current_room_like_the_server() -> None:
    """After a part the most recently joined remaining room becomes current."""
    state = logged_in_state()
    feed(state, "JOIN #dev alice", "WHO #dev alice", "OK join #dev", command="/join #dev")
    feed(state, "JOIN #ops alice", "WHO #ops alice", "OK join #ops", command="/join #ops")
    assert state.current_room == "#ops"
    feed(state, "OK join #dev", command="/join #dev")
    assert state.current_room == "#dev"
    feed(state, "PART #dev alice", "OK part #dev", command="/part")
    assert state.rooms() == ["#lobby", "#ops"]
    assert state.current_room == "#ops"


def test_others_joining_and_leaving_update_members() -> None:
    """JOIN and PART of other people change who is known to be online."""
    state = logged_in_state()
    feed(state, "JOIN #lobby carol", "PART #lobby bob")
    assert state.members("#lobby") == ["alice", "carol"]
    rooms, users = state.completion_snapshot()
    assert rooms == ["#lobby"]
    assert users == ["carol"]


def test_rooms_from_room_lines_and_people_from_dms_complete_too() -> None:
    """ROOM lines teach room names; DM and STORED lines teach correspondents."""
    state = logged_in_state()
    feed(state, "ROOM #lobby 2", "ROOM #games 5", "OK rooms", command="/rooms")
    feed(state, "DM alice dave hi", "STORED 2026-11-25T10:00:00.000Z erin ping")
    rooms, users = state.completion_snapshot()
    assert sorted(rooms) == ["#games", "#lobby"]
    assert sorted(users) == ["bob", "dave", "erin"]


def test_the_prompt_shows_who_where_and_whether_connected() -> None:
    """The prompt is the user's status line."""
    assert PromptView(True, "alice", "#lobby").text() == "alice #lobby> "
    assert PromptView(False, "alice", "#lobby").text() == "(offline) alice #lobby> "
    assert PromptView(True, None, None).text() == "guest> "
    state = logged_in_state()
    assert state.prompt_view() == PromptView(True, "alice", "#lobby")


def test_starting_over_forgets_the_session_but_not_the_rooms_known() -> None:
    """A new connection starts logged out; completion still knows room names."""
    state = logged_in_state()
    state.start_over()
    assert (state.user, state.current_room, state.rooms()) == (None, None, [])
    assert state.completion_snapshot()[0] == ["#lobby"]
