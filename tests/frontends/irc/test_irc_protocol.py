"""The IRC door over StringTransport: registration, logins, chat with the line door, limits."""

import base64

import pytest

from chatd.frontends.irc.message import parse
from tests.frontends.irc.support import IRCHarness
from tests.support import SlowDatabase


@pytest.fixture
def irc() -> IRCHarness:
    """An in-memory server with accounts alice and bob."""
    harness = IRCHarness()
    harness.account("alice")
    harness.account("bob")
    return harness


def numerics(lines):
    """The verbs and numerics of ``lines``, in order."""
    return [parse(line).verb for line in lines]


def test_pass_login_welcomes_then_joins_the_lobby(irc):
    """PASS with NICK as the account: 001-005 and MOTD, then JOIN #lobby with its NAMES."""
    client = irc.irc_client()
    lines = client.login_with_pass("alice")
    verbs = numerics(lines)
    assert verbs[:4] == ["001", "002", "003", "004"]
    assert "005" in verbs and "376" in verbs
    assert verbs.index("376") < verbs.index("JOIN")
    assert ":alice!alice@chatd JOIN #lobby" in lines
    assert ":chatd 353 alice = #lobby alice" in lines
    assert verbs[-1] == "366"


@pytest.mark.parametrize("bytewise", [False, True])
def test_sasl_plain_logs_in_before_registration_ends(irc, bytewise):
    """SASL PLAIN: 900 and 903 during CAP, the welcome and the rooms after CAP END."""
    client = irc.irc_client()
    payload = base64.b64encode(b"\0alice\0password1").decode()
    lines = client.send("CAP LS 302", "CAP REQ :sasl", bytewise=bytewise)
    assert any(" LS " in line and "sasl=PLAIN" in line for line in lines)
    assert lines[-1] == ":chatd CAP * ACK sasl"
    assert client.send("AUTHENTICATE PLAIN", bytewise=bytewise) == ["AUTHENTICATE +"]
    lines = client.send(f"AUTHENTICATE {payload}", bytewise=bytewise)
    assert numerics(lines) == ["900", "903"]
    lines = client.send("NICK alice", "USER u 0 * :A", bytewise=bytewise)
    assert lines == []  # CAP negotiation still open
    lines = client.send("CAP END", bytewise=bytewise)
    verbs = numerics(lines)
    assert verbs[0] == "001" and verbs.index("376") < verbs.index("JOIN")


def test_sasl_with_a_wrong_password_fails_and_counts_as_a_failed_login(irc):
    """A wrong SASL password answers 904, and the login throttle counts it."""
    client = irc.irc_client()
    lines = client.login_with_sasl("alice", "wrong-password")
    assert "904" in numerics(lines)
    assert "JOIN" not in numerics(lines)
    assert irc.factory.limits.logins._addresses.get("127.0.0.1").count == 1


def test_a_wrong_pass_is_refused_and_the_connection_closed(irc):
    """PASS with a wrong password: 464, then ERROR, then the connection closes."""
    client = irc.irc_client()
    lines = client.login_with_pass("alice", "wrong-password")
    assert numerics(lines)[-2:] == ["464", "ERROR"]
    assert client.transport.closed


def test_pass_with_an_account_prefix(irc):
    """``PASS account:password`` logs in as that account whatever the NICK was."""
    client = irc.irc_client()
    lines = client.send("PASS bob:password1", "NICK someone", "USER u 0 * :B")
    assert lines[0].startswith(":chatd 001 bob ")
    assert ":bob!bob@chatd JOIN #lobby" in lines


def test_without_a_login_only_nickserv_and_registration_are_allowed(irc):
    """Unauthenticated: welcomed, told how to log in, JOIN refused, IDENTIFY logs in."""
    client = irc.irc_client()
    lines = client.send("NICK alice", "USER u 0 * :A")
    assert numerics(lines)[0] == "001"
    assert any("NickServ IDENTIFY" in line for line in lines)
    lines = client.send("JOIN #lobby")
    assert numerics(lines) == ["NOTICE"] and "Log in first" in lines[0]
    lines = client.send("PRIVMSG NickServ :IDENTIFY password1")
    assert ":alice!alice@chatd JOIN #lobby" in lines
    assert "900" in numerics(lines)


def test_nickserv_identify_takes_the_accounts_nick(irc):
    """IDENTIFY <account> <password> under another nick: a NICK change to the account."""
    client = irc.irc_client()
    client.send("NICK guest1", "USER u 0 * :G")
    lines = client.send("PRIVMSG NickServ :IDENTIFY bob password1")
    assert lines.index(":guest1!guest1@chatd NICK bob") < lines.index(":bob!bob@chatd JOIN #lobby")


def test_nickserv_register_then_identify(irc):
    """NickServ REGISTER creates the account named by the nick; IDENTIFY then logs in."""
    client = irc.irc_client()
    client.send("NICK carol", "USER u 0 * :C")
    lines = client.send("PRIVMSG NickServ :REGISTER carols-password")
    assert "Account carol created" in lines[-1]
    lines = client.send("PRIVMSG NickServ :IDENTIFY carols-password")
    assert ":carol!carol@chatd JOIN #lobby" in lines


def test_register_command_of_account_registration(irc):
    """draft/account-registration REGISTER: SUCCESS, and FAIL for a taken name."""
    client = irc.irc_client()
    client.send("NICK dave")
    assert client.send("REGISTER * * daves-password") == [
        ":chatd REGISTER SUCCESS dave :Account created"
    ]
    lines = client.send("REGISTER alice * some-password")
    assert lines[0].startswith(":chatd FAIL REGISTER ACCOUNT_EXISTS alice ")


def test_an_irc_user_and_a_line_user_talk_both_ways(irc):
    """PRIVMSG to #lobby reaches the line user as MSG; MSG reaches IRC as PRIVMSG."""
    line = irc.logged_in("bob")
    client = irc.irc_client()
    client.login_with_pass("alice", caps=["server-time", "account-tag"])
    assert line.lines() == ["JOIN #lobby alice"]
    assert client.send("PRIVMSG #lobby :hello from irc") == []  # no echo-message
    assert line.lines() == ["MSG #lobby alice hello from irc"]
    assert line.send("hi from the line door")[0] == "MSG #lobby bob hi from the line door"
    (received,) = client.lines()
    message = parse(received)
    assert message.source == "bob!bob@chatd"
    assert message.params == ("#lobby", "hi from the line door")
    assert set(message.tags) == {"time", "account"} and message.tags["account"] == "bob"


def test_echo_message_shows_the_sender_its_own_message(irc):
    """With echo-message the sending connection gets its PRIVMSG back, once."""
    client = irc.irc_client()
    client.login_with_pass("alice", caps=["echo-message"])
    assert client.send("PRIVMSG #lobby :echo me") == [
        ":alice!alice@chatd PRIVMSG #lobby :echo me"
    ]


def test_another_session_of_the_same_user_sees_what_one_says(irc):
    """Two IRC connections of alice: what one says reaches the other as alice's message."""
    first = irc.irc_client(port=50001)
    second = irc.irc_client(port=50002)
    first.login_with_pass("alice")
    second.login_with_pass("alice")
    first.lines()
    assert first.send("PRIVMSG #lobby :from the first") == []
    assert second.lines() == [":alice!alice@chatd PRIVMSG #lobby :from the first"]


def test_a_further_session_gets_its_own_join_for_the_users_rooms(irc):
    """alice online on the line door; her IRC connection still sees JOIN for each of her rooms."""
    line = irc.logged_in("alice")
    line.send("/join #dev")
    client = irc.irc_client()
    lines = client.login_with_sasl("alice")
    assert ":alice!alice@chatd JOIN #lobby" in lines
    assert ":alice!alice@chatd JOIN #dev" in lines
    assert line.lines() == []  # the user was in both already: nobody sees a JOIN


def test_a_dm_to_an_offline_account_is_stored_and_arrives_at_irc_login(irc):
    """A line user's DM to offline alice is stored; her IRC login gets it with its time."""
    line = irc.logged_in("bob")
    assert line.send("/msg alice see you later")[-1] == "OK msg alice stored"
    client = irc.irc_client()
    lines = client.login_with_pass("alice", caps=["server-time"])
    stored = [parse(text) for text in lines if "see you later" in text]
    assert len(stored) == 1
    assert stored[0].params == ("alice", "see you later")
    assert stored[0].tags["time"].endswith("Z")


def test_a_dm_from_irc_reaches_a_line_user(irc):
    """PRIVMSG to a nick is a DM; to an unknown nick 401."""
    line = irc.logged_in("bob")
    client = irc.irc_client()
    client.login_with_pass("alice")
    line.lines()
    assert client.send("PRIVMSG bob :psst") == []
    assert line.lines() == ["DM alice bob psst"]
    assert numerics(client.send("PRIVMSG nobody-here :hi")) == ["401"]


def test_join_and_part_render_for_everyone(irc):
    """JOIN a new room: JOIN, NAMES; PART: PART; a line user in the room sees both."""
    line = irc.logged_in("bob")
    line.send("/join #dev")
    client = irc.irc_client()
    client.login_with_pass("alice")
    line.lines()
    lines = client.send("JOIN #dev")
    assert lines[0] == ":alice!alice@chatd JOIN #dev"
    assert ":chatd 353 alice = #dev :alice @bob" in lines  # bob opened #dev: operator
    assert line.lines() == ["JOIN #dev alice"]
    assert client.send("PART #dev") == [":alice!alice@chatd PART #dev"]
    assert line.lines() == ["PART #dev alice"]


def test_join_with_a_key_is_refused(irc):
    """Rooms have no keys: JOIN with one gets 475 for that room."""
    client = irc.irc_client()
    client.login_with_pass("alice")
    assert numerics(client.send("JOIN #secret key")) == ["475"]


def test_history_on_join_comes_in_a_chathistory_batch_with_times(irc):
    """A room's past messages come in a chathistory batch, each with its server-time."""
    line = irc.logged_in("bob")
    line.send("/join #dev", "first", "second")
    client = irc.irc_client()
    client.login_with_pass("alice", caps=["server-time", "batch"])
    lines = [parse(text) for text in client.send("JOIN #dev")]
    opening = next(m for m in lines if m.verb == "BATCH")
    assert opening.params[1:] == ("chathistory", "#dev")
    batch = opening.params[0][1:]
    history = [m for m in lines if m.verb == "PRIVMSG"]
    assert [m.params[1] for m in history] == ["first", "second"]
    assert all(m.tags["batch"] == batch and "time" in m.tags for m in history)
    assert lines[-1].verb == "BATCH" and lines[-1].params == (f"-{batch}",)


def test_nick_change_after_registration_is_refused(irc):
    """The nick is the account name: NICK to anything else gets 432."""
    client = irc.irc_client()
    client.login_with_pass("alice")
    assert numerics(client.send("NICK mallory")) == ["432"]


def test_commands_before_registration_get_451(irc):
    """JOIN before NICK/USER: 451 ERR_NOTREGISTERED."""
    client = irc.irc_client()
    assert numerics(client.send("JOIN #lobby")) == ["451"]


def test_unknown_command_gets_421(irc):
    """An unknown verb after registration: 421."""
    client = irc.irc_client()
    client.login_with_pass("alice")
    assert numerics(client.send("FROBNICATE now")) == ["421"]


def test_missing_parameters_get_461(irc):
    """USER with too few parameters: 461."""
    client = irc.irc_client()
    assert numerics(client.send("USER only")) == ["461"]


@pytest.mark.parametrize("bytewise", [False, True])
def test_a_line_over_512_bytes_gets_417_and_the_connection_goes_on(irc, bytewise):
    """Past the 512-byte line: 417, the line dropped; the next one works."""
    client = irc.irc_client()
    client.login_with_pass("alice")
    lines = client.send("PRIVMSG #lobby :" + "x" * 600, "PING after", bytewise=bytewise)
    assert numerics(lines) == ["417", "PONG"]


def test_a_line_at_the_limit_is_accepted(irc):
    """Exactly 510 bytes plus CR LF: accepted."""
    client = irc.irc_client()
    client.login_with_pass("alice", caps=["echo-message"])
    head = "PRIVMSG #lobby :"
    lines = client.send(head + "y" * (510 - len(head)))
    assert numerics(lines) == ["PRIVMSG"]


def test_an_endless_line_is_dropped_without_growing_the_buffer(irc):
    """Bytes with no line end past the longest line: 417 once, then discarded to the LF."""
    client = irc.irc_client()
    client.login_with_pass("alice")
    client.protocol.dataReceived(b"x" * 20000)
    assert numerics(client.lines()) == ["417"]
    assert len(client.protocol._buffer) == 0
    assert numerics(client.send("tail of it", "PING ok")) == ["PONG"]


def test_invalid_utf8_is_refused(irc):
    """A line that is not UTF-8: FAIL INVALID_UTF8; the connection stays."""
    client = irc.irc_client()
    client.login_with_pass("alice")
    lines = client.send(b"PRIVMSG #lobby :\xff\xfe")
    assert lines[0].startswith(":chatd FAIL * INVALID_UTF8")
    assert numerics(client.send("PING x")) == ["PONG"]


def test_quit_says_error_and_closes(irc):
    """QUIT: ERROR and the connection closes; the line users see the PART."""
    line = irc.logged_in("bob")
    client = irc.irc_client()
    client.login_with_pass("alice")
    line.lines()
    assert numerics(client.send("QUIT :bye")) == ["ERROR"]
    assert client.transport.closed
    assert line.lines() == ["PART #lobby alice"]


def test_isupport_tells_the_truth(irc):
    """005 names the casemapping, channel types, nick length, UTF8ONLY and WHOX."""
    client = irc.irc_client()
    lines = client.login_with_pass("alice")
    tokens = " ".join(line for line in lines if " 005 " in line)
    for token in ("CASEMAPPING=ascii", "CHANTYPES=#", "NICKLEN=32", "UTF8ONLY", "WHOX"):
        assert token in tokens


def test_list_and_names_and_who(irc):
    """LIST shows rooms with members; NAMES and WHO list #lobby's members."""
    irc.logged_in("bob")
    client = irc.irc_client()
    client.login_with_pass("alice")
    lines = client.send("LIST")
    assert numerics(lines) == ["321", "322", "323"]
    assert parse(lines[1]).params[1:3] == ("#lobby", "2")
    assert numerics(client.send("NAMES #lobby")) == ["353", "366"]
    assert numerics(client.send("WHO #lobby")) == ["352", "352", "315"]


def test_user_mode_i_is_accepted_and_echoed(irc):
    """``MODE alice +i`` (sent by irssi on connect) is echoed; other flags get 501."""
    client = irc.irc_client()
    client.login_with_pass("alice")
    assert client.send("MODE alice +i") == [":alice!alice@chatd MODE alice +i"]
    assert numerics(client.send("MODE alice")) == ["221"]
    assert numerics(client.send("MODE alice +w")) == ["501"]
    assert numerics(client.send("MODE bob +i")) == ["502"]


def test_a_line_users_action_reaches_irc_as_a_ctcp_action(irc):
    """/me on the line door is PRIVMSG \\x01ACTION ...\\x01 on IRC, live and in history."""
    line = irc.logged_in("bob")
    client = irc.irc_client()
    client.login_with_pass("alice", caps=["server-time", "batch"])
    line.send("/me waves")
    irc.end_turn()
    (received,) = client.lines()
    assert parse(received).params == ("#lobby", "\x01ACTION waves\x01")
    line.send("/join #dev", "/me hums")
    lines = [parse(text) for text in client.send("JOIN #dev")]
    history = [m for m in lines if m.verb == "PRIVMSG"]
    assert [m.params[1] for m in history] == ["\x01ACTION hums\x01"]


def test_a_ctcp_action_from_irc_is_an_action_for_the_line_door(irc):
    """PRIVMSG #room :\\x01ACTION waves\\x01 is ACTION on the line door, kept as one."""
    line = irc.logged_in("bob")
    client = irc.irc_client()
    client.login_with_pass("alice", caps=["echo-message"])
    line.lines()
    echoed = client.send("PRIVMSG #lobby :\x01ACTION waves\x01")
    irc.end_turn()
    assert line.lines() == ["ACTION #lobby alice waves"]
    echoed += client.lines()
    assert [parse(text).params for text in echoed] == [("#lobby", "\x01ACTION waves\x01")]
    assert line.send("/history #lobby 1")[0].startswith("HISTORYACTION #lobby ")


def test_messages_carry_the_cores_msgid_with_message_tags(irc):
    """With message-tags every PRIVMSG has the core's ``msgid``: the same live, echoed and replayed.

    A line user's message reaches an IRC connection with an id; the
    sender's own echo carries its id; the room's history on join replays
    the very same ids; a stored DM keeps an id. Without message-tags no
    msgid is sent.
    """
    irc.account("carol")
    irc.account("dave")
    line = irc.logged_in("bob")
    tagged = irc.irc_client(port=50001)
    tagged.login_with_pass("alice", caps=["message-tags", "echo-message"])
    plain = irc.irc_client(port=50002)
    plain.login_with_pass("alice")
    tagged.lines()
    line.lines()
    line.send("hello from the line door")
    (received,) = [parse(text) for text in tagged.lines() if "hello" in text]
    first_id = received.tags["msgid"]
    assert len(first_id) == 20 and int(first_id, 16) > 0
    assert all("msgid" not in parse(text).tags for text in plain.lines())
    (echoed,) = [parse(text) for text in tagged.send("PRIVMSG #lobby :and from irc")]
    second_id = echoed.tags["msgid"]
    assert second_id > first_id  # time-ordered, made by the core

    joining = irc.irc_client(port=50003)
    caps = ["message-tags", "server-time"]
    lines = [parse(text) for text in joining.login_with_pass("carol", caps=caps)]
    replayed = {m.params[1]: m.tags["msgid"] for m in lines if m.verb == "PRIVMSG"}
    assert replayed == {"hello from the line door": first_id, "and from irc": second_id}

    assert line.send("/msg dave see you")[-1] == "OK msg dave stored"
    offline = irc.irc_client(port=50004)
    lines = [parse(text) for text in offline.login_with_pass("dave", caps=caps)]
    (stored,) = [m for m in lines if m.verb == "PRIVMSG" and m.params[1] == "see you"]
    assert len(stored.tags["msgid"]) == 20 and stored.tags["msgid"] > second_id


@pytest.mark.parametrize(
    "milliseconds",
    [0, 999, 1_000, 1_764_064_800_000, 1_764_064_800_001, 1_764_064_859_999, 1_764_064_860_000],
)
def test_irc_time_is_utc_iso_8601_with_milliseconds(milliseconds):
    """server-time values, made from a cached second, read back as the same instant."""
    from datetime import UTC, datetime

    from chatd.frontends.irc.protocol import irc_time

    text = irc_time(milliseconds)
    assert text.endswith("Z") and len(text) == len("2025-11-25T10:00:00.000Z")
    parsed = datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    assert round(parsed.timestamp() * 1000) == milliseconds


def test_lines_of_one_read_run_in_order_around_a_held_command():
    """One read with a message whose commit is held, a JOIN behind it, a PING and half a
    line: the JOIN and PING wait for the commit, then run in order; the half line waits
    for its end in the next read, and nothing framed already is kept in the buffer."""
    database = SlowDatabase()
    harness = IRCHarness(database=database)
    harness.account("alice")
    client = harness.irc_client()
    client.login_with_pass("alice", caps=["echo-message"])
    client.lines()
    database.holding = True
    client.protocol.dataReceived(
        b"PRIVMSG #lobby :held\r\nJOIN #side\r\nPING after\r\nPING ha")
    harness.end_turn()
    assert client.lines() == []
    database.holding = False
    harness.commit_held()
    assert numerics(client.lines()) == ["PRIVMSG", "JOIN", "353", "366", "PONG"]
    rest = client.protocol._buffer[client.protocol._start:]
    assert rest == b"PING ha"
    assert numerics(client.send("lf")) == ["PONG"]
    assert client.protocol._buffer[client.protocol._start:] == b""


def test_a_read_of_many_short_lines_answers_each_in_order(irc):
    """2,000 PINGs in one read: 2,000 PONGs in order (lines are framed from an offset)."""
    client = irc.irc_client()
    client.login_with_pass("alice")
    client.lines()
    client.protocol.dataReceived(b"".join(b"PING %d\r\n" % index for index in range(2000)))
    irc.end_turn()
    pongs = [parse(line).params[-1] for line in client.lines()]
    assert pongs == [str(index) for index in range(2000)]
