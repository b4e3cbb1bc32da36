"""Hypothesis against the line parser and the command table.

Any bytes in, only well-formed OK/ERR/event lines out, never an exception:
each non-empty line gets exactly one final reply, after the lines it caused,
however the bytes are cut into reads and however long commands wait on the
database. Runs are bounded (max_examples, no deadline) so the suite stays
quick; ``database=None`` keeps Hypothesis from writing into the checkout.
"""

from contextlib import contextmanager
from itertools import pairwise

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.logger import globalLogPublisher

from chatd.config import Config, RateLimit
from chatd.frontends.line.protocol import COMMANDS
from chatd.frontends.line.wire import ERROR_CODES, FIELD_COUNTS
from tests.support import ChatHarness, SlowDatabase

# Every server line type, with its number of fields after the type: the one table
# (chatd.frontends.line.wire) the server, the console client and the bench share.
FIELDS = FIELD_COUNTS
FUZZ = settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# --- what goes in -------------------------------------------------------------

words = st.one_of(
    st.sampled_from(
        [
            "alice", "bob", "Alice", "#lobby", "#Room", "#r00m.x", "#", "#" + "a" * 33,
            "password1", "pass word", "1", "0", "-3", "500", "501", "99999999999999999999",
            "x" * 40, "é", "\t", "/", "//", "#lobby\x00", "\u202e", "ä" * 300,
        ]
    ),
    st.text(max_size=12),
)
command_names = st.one_of(
    st.sampled_from([f"/{name}" for name in COMMANDS]).map(
        lambda name: name.upper() if len(name) % 2 else name
    ),
    st.sampled_from(["", "/", "//", "/nosuch", "///", "/ ", "/LoGiN"]),
)
text_lines = st.builds(
    lambda name, separator, args: name + separator + separator.join(args),
    command_names,
    st.sampled_from([" ", "  ", "\t", ""]),
    st.lists(words, max_size=4),
).map(lambda line: line.encode("utf-8", "surrogatepass"))
lines = st.one_of(
    text_lines,
    st.binary(max_size=80),
    st.binary(min_size=4090, max_size=4110),
    st.sampled_from([b"\r", b"\xff\xfe", b"\xed\xa0\x80", b"/ping \xc3", b"\x00" * 10]),
).map(lambda line: line.replace(b"\n", b""))


# --- what must come out -------------------------------------------------------------


def check_well_formed(line: str) -> None:
    """One server line: a known type, enough fields, a known error code, no server-error."""
    kind, _, rest = line.partition(" ")
    assert kind in FIELDS, line
    if kind == "OK":
        assert rest.split(" ")[0] in {*COMMANDS, "say"}, line
    elif kind == "ERR":
        assert rest.split(" ")[0] in ERROR_CODES, line
    elif kind not in ("INFO", "PING", "BYE"):
        # The last field may be empty and then leaves out its space; others may not.
        assert len(rest.split(" ", FIELDS[kind] - 1)) >= FIELDS[kind] - 1, line


@contextmanager
def no_logged_failures():
    """Fail if the server logged a failure (a traceback) while inside."""
    failures: list[dict] = []

    def keep(event: dict) -> None:
        """Keep the events that carry a failure."""
        if "log_failure" in event:
            failures.append(event)

    globalLogPublisher.addObserver(keep)
    try:
        yield
    finally:
        globalLogPublisher.removeObserver(keep)
    assert not failures, [event["log_failure"].getTraceback() for event in failures]


def needs_reply(line: bytes) -> bool:
    """Whether PROTOCOL.md promises a final reply for this line (its CR dropped)."""
    return bool(line[:-1] if line.endswith(b"\r") else line)


def start(logged_in: bool, limited: bool, **settings_):
    """A fresh server and one client, logged in as alice or not."""
    rate = RateLimit(10.0, 40) if limited else None
    harness = ChatHarness(Config(bcrypt_rounds=4, rate_limit=rate, **settings_))
    harness.logged_in("bob").close()
    client = harness.logged_in("alice") if logged_in else harness.client()
    client.lines()
    return harness, client


# --- the properties ----------------------------------------------------------------


@FUZZ
@given(st.lists(lines, max_size=25), st.booleans(), st.booleans())
def test_every_line_gets_exactly_one_final_reply_after_what_it_caused(fed, logged_in, limited):
    """Line by line: one OK/ERR per non-empty line, last of its output; nothing after BYE."""
    _harness, client = start(logged_in, limited)
    closed = False
    with no_logged_failures():
        for line in fed:
            client.feed(line + b"\n")
            out = client.lines()
            for server_line in out:
                check_well_formed(server_line)
            if closed:
                assert out == []
                continue
            finals = [server_line for server_line in out if server_line.startswith(("OK ", "ERR "))]
            if out and out[-1].startswith("BYE "):
                # /quit: OK quit then BYE quit; a flood: BYE flood instead of a reply.
                closed = True
                assert len(finals) <= 1 and all(not s.startswith("BYE") for s in out[:-1])
                continue
            assert len(finals) == (1 if needs_reply(line) else 0), (line, out)
            if finals:
                assert out[-1] == finals[0], out


@FUZZ
@given(st.lists(lines, max_size=15), st.lists(st.integers(0, 70_000), max_size=12),
       st.sampled_from([b"\n", b"\r\n"]), st.booleans())
def test_how_the_bytes_are_cut_into_reads_changes_nothing(fed, cuts, ending, logged_in):
    """Whole lines, or the same bytes in arbitrary reads (one byte at a time too): same output.

    The same replies in the same order, and the same events in the same order;
    how the two interleave may differ, as room messages that arrive together
    are committed and delivered together.
    """
    data = b"".join(line + ending for line in fed)
    _harness, whole = start(logged_in, limited=False)
    for line in fed:
        whole.feed(line + ending)
    _harness, pieces = start(logged_in, limited=False)
    with no_logged_failures():
        edges = sorted({0, len(data), *(cut % (len(data) + 1) for cut in cuts)})
        for begin, end in pairwise(edges):
            pieces.feed(data[begin:end], bytewise=end - begin < 16)
    assert split_finals(pieces.lines()) == split_finals(whole.lines())


def split_finals(out: list[str]) -> tuple[list[str], list[str]]:
    """The final replies (and BYE) in order, and the other lines in order."""
    finals = [line for line in out if line.startswith(("OK ", "ERR ", "BYE "))]
    return finals, [line for line in out if not line.startswith(("OK ", "ERR ", "BYE "))]


queued_commands = st.sampled_from(
    [
        "hello there", "/join #side", "/part #side", "/say #lobby hi", "/msg bob hi",
        "/msg nobody hi", "/msg carol stored for later", "/history #lobby 3", "/who",
        "/rooms", "/nosuch", "/join bad name", "//slash", "/join #lobby", "/part",
    ]
)


@FUZZ
@given(st.lists(queued_commands, min_size=1, max_size=12), st.integers(1, 5))
def test_final_replies_keep_line_order_while_commands_wait_on_commits(commands, reads):
    """Commits held back: lines queue behind the waiting command, replies still in line order.

    Each command is followed by ``/ping k``; the finals must alternate
    command, ``OK ping k`` in order, and nothing may be lost or doubled.
    """
    database = SlowDatabase()
    harness = ChatHarness(Config(bcrypt_rounds=4, rate_limit=None), database=database)
    harness.logged_in("carol").close()
    harness.logged_in("bob")
    alice = harness.logged_in("alice")
    alice.lines()
    database.holding = True
    data = b"".join(f"{command}\n/ping {k}\n".encode() for k, command in enumerate(commands))
    size = -(-len(data) // reads)
    with no_logged_failures():
        for begin in range(0, len(data), size):
            alice.feed(data[begin : begin + size])
            harness.commit_held()
        while database.pending:
            harness.commit_held()
    out = alice.lines()
    finals = [line for line in out if line.startswith(("OK ", "ERR "))]
    assert len(finals) == 2 * len(commands), out
    assert finals[1::2] == [f"OK ping {k}" for k in range(len(commands))]
    assert not any(line.startswith("OK ping") for line in finals[0::2])
