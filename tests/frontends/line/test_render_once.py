"""The line door renders each event once, however many of its sessions get it."""

from chatd.config import Config
from chatd.core.events import ACTION, HistoryLine, RoomMessage, RoomMessages, StoredMessage
from chatd.frontends.line.render import encode
from chatd.storage import transactions
from tests.support import ChatHarness, LineTransport

MEMBERS = 1000


def test_a_message_to_a_1000_member_room_is_encoded_once_by_the_line_door():
    """One room message to 1,000 sessions of the line door: one encoding, 1,000 writes.

    The sessions are real ``ChatProtocol`` connections (the door's mind)
    over ``StringTransport``; the service hands each the same event object
    and the door's ``LineEncoder`` encodes it the first time only.
    """
    harness = ChatHarness(
        Config(
            bcrypt_rounds=4,
            rate_limit=None,
            stored_message_limit=None,
            room_creation_limit=None,
            max_connections_per_address=MEMBERS,
        )
    )
    transports = []
    for number in range(MEMBERS):
        name = f"user{number}"
        harness.database.write(transactions.create_user, name, "unused-hash", 0)
        transport = LineTransport("127.0.0.1", 40000 + number)
        protocol = harness.factory.buildProtocol(transport.getPeer())
        transport.protocol = protocol
        protocol.makeConnection(transport)
        harness.chat.start_session(name, protocol)
        transports.append(transport)
    harness.end_turn()
    lobby = harness.chat.rooms["#lobby"]
    assert len(lobby.members) == MEMBERS
    sender = harness.chat.users["user0"].sessions[0]
    for transport in transports:
        transport.clear()
    before = harness.factory.encoder.encodings
    sender.say("hello, everyone")
    harness.end_turn()
    assert harness.factory.encoder.encodings - before == 1
    expected = b"MSG #lobby user0 hello, everyone\r\n"
    assert all(transport.value() == expected for transport in transports)
    # The next event is a new object: encoded once more, not served from the cache.
    sender.say("and again")
    harness.end_turn()
    assert harness.factory.encoder.encodings - before == 2


def test_encode_renders_every_line_type_of_the_core_events():
    """The table gives each event its line type; a batch is its messages' lines in order."""
    said = RoomMessage("#a", "alice", "hi", 0, "id1", 1)
    done = RoomMessage("#a", "bob", "waves", 0, "id2", 2, ACTION)
    assert encode(RoomMessages((said, done))) == b"MSG #a alice hi\r\nACTION #a bob waves\r\n"
    assert encode(HistoryLine("#a", 0, "bob", "waves", kind=ACTION)) == (
        b"HISTORYACTION #a 1970-01-01T00:00:00.000Z bob waves\r\n"
    )
    stored = StoredMessage(1, "bob", "psst")
    assert encode(stored) == b"STORED 1970-01-01T00:00:00.001Z bob psst\r\n"
