"""Guests (``CHATD_GUESTS``) as operators of the rooms they open, in the core."""

from tests.core.test_direct_history import start
from tests.support import ChatHarness, RecordingClient


def test_a_guest_opening_a_room_is_its_operator_in_memory_only():
    """The core's rule (not a door's): the guest whose join created the room is its
    operator while it stays; nothing is written to room_members; a room that existed
    (here #lobby, and #old that an account opened) makes no guest an operator."""
    harness = ChatHarness()
    start(harness, "alice")[0].join("#old")
    guest = harness.chat.start_guest("visitor", RecordingClient())
    guest.join("#new")
    guest.join("#old")
    guest.join("#lobby")
    rooms = harness.chat.rooms
    assert rooms["#new"].operators == {"visitor": "visitor"}
    assert "visitor" not in rooms["#old"].operators and "visitor" not in rooms["#lobby"].operators
    connection = harness.database.connection
    assert connection.execute("SELECT count(*) FROM room_members WHERE operator").fetchone() == (
        1,  # alice's of #old
    )
    guest.logout()
    assert "#new" not in rooms
