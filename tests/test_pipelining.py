"""Room messages pipeline on the real threaded database, over real sockets (issue 9).

The pipelining tests of tests/test_protocol.py run on the inline database,
where every write commits at once. Here the server is the real one in this
process (real reactor, real loopback sockets, ``chatd.storage.sqlite.database.Database``
with its writer thread and a real SQLite file).
"""

import threading

import pytest_twisted
from twisted.internet import defer, reactor

from chatd.storage import transactions
from tests.netclient import connect, start_server

# Bounds every wait below: a broken pipeline fails the test, it never hangs it.
WAIT_SECONDS = 20


@pytest_twisted.inlineCallbacks
def test_room_messages_pipeline_on_the_real_database(tmp_path, monkeypatch):
    """Three messages sent at once are all handed to the writer thread before the
    first commits (none waits for another's commit), and are answered in line
    order, the /ping behind them last."""
    server, port = yield start_server(tmp_path)
    database = server.database
    gate = threading.Event()
    submitted: list[tuple] = []
    all_three: defer.Deferred = defer.Deferred()
    write = database.write

    def counting_write(body, *args):
        done = write(body, *args)
        if body is transactions.post_room_message:
            submitted.append(args)
            if len(submitted) == 3:
                all_three.callback(None)
        return done

    try:
        alice = yield connect(port)
        yield alice.login("alice")
        monkeypatch.setattr(database, "write", counting_write)
        # Once an empty write is through, the writer is idle; then it takes the
        # gate alone and waits on it: nothing queued after it commits until it opens.
        yield write(lambda connection: None)
        batches = database.batches_committed
        held = write(lambda connection: gate.wait(WAIT_SECONDS))
        answered = alice.expect("OK ping p")
        alice.transport.write(b"one\ntwo\nthree\n/ping p\n")
        yield all_three.addTimeout(WAIT_SECONDS, reactor)
        # All three are with the writer, and none has committed or been answered.
        assert database.batches_committed == batches
        assert [line for line in alice.lines if line.startswith(("MSG ", "OK say"))] == []
        gate.set()
        yield held
        lines = yield answered
        committed = database.batches_committed - batches
    finally:
        gate.set()
        yield server.stopService()
    assert lines == [
        "MSG #lobby alice one",
        "MSG #lobby alice two",
        "MSG #lobby alice three",
        "OK say #lobby",
        "OK say #lobby",
        "OK say #lobby",
        "OK ping p",
    ]
    # Committed in the gate's batch or the one right after it (as the writer
    # thread woke): at most two batches for three messages.
    assert committed in (1, 2)
