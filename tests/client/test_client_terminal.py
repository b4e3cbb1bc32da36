"""The input thread: it reads lines and hands them to the reactor, and only that way.

prompt_toolkit reads from a pipe input here instead of a keyboard; the fake
reactor records which thread called ``callFromThread`` with what.
"""

from __future__ import annotations

import io
import queue
import threading

from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output import DummyOutput

from chatd.client.commands import Quit, SendLine
from chatd.client.state import ChatState
from chatd.client.terminal import PipeInput, TerminalInput

WAIT = 10


class ThreadRecordingReactor:
    """Records every callFromThread with the name of the calling thread."""

    def __init__(self) -> None:
        self.calls: queue.Queue = queue.Queue()

    def callFromThread(self, function, *args) -> None:
        """Record the call instead of running it in a reactor."""
        self.calls.put((threading.current_thread().name, function, args))


def never_called_directly(_action) -> None:
    """The deliver function: the test checks it only ever travels via callFromThread."""
    raise AssertionError("deliver must be called by the reactor, not the input thread")


def test_typed_lines_reach_the_reactor_through_call_from_thread() -> None:
    """Each finished line is handed over from the input thread, already understood."""
    reactor = ThreadRecordingReactor()
    with create_pipe_input() as keyboard:
        terminal = TerminalInput(
            reactor,
            ChatState(),
            never_called_directly,
            prompt_input=keyboard,
            prompt_output=DummyOutput(),
        )
        terminal.start()
        keyboard.send_text("/join #dev\r")
        assert reactor.calls.get(timeout=WAIT) == (
            "chatd-input",
            never_called_directly,
            (SendLine("/join #dev"),),
        )
        keyboard.send_text("\r   \rhello\r")
        assert reactor.calls.get(timeout=WAIT)[2] == (SendLine("hello"),)
        keyboard.send_text("/login alice\r")
        keyboard.send_text("s3cret words\r")
        assert reactor.calls.get(timeout=WAIT)[2] == (SendLine("/login alice s3cret words"),)
        keyboard.send_text("\x04")
        assert reactor.calls.get(timeout=WAIT)[2] == (Quit("/quit"),)
        terminal.join()


def test_a_new_password_is_asked_twice_and_a_mismatch_sends_nothing() -> None:
    """/register without a password asks for it twice; differing answers are dropped."""
    reactor = ThreadRecordingReactor()
    with create_pipe_input() as keyboard:
        terminal = TerminalInput(
            reactor,
            ChatState(),
            never_called_directly,
            prompt_input=keyboard,
            prompt_output=DummyOutput(),
        )
        terminal.start()
        keyboard.send_text("/register carol\rone-password\rother-password\r")
        keyboard.send_text("/register carol\rsame-password\rsame-password\r")
        assert reactor.calls.get(timeout=WAIT)[2] == (SendLine("/register carol same-password"),)
        keyboard.send_text("/quit\r")
        assert reactor.calls.get(timeout=WAIT)[2] == (Quit("/quit"),)
        terminal.join()


def test_the_reactor_can_stop_the_input_thread_while_it_waits_at_the_prompt() -> None:
    """A kicked client must end its input thread, or the terminal stays in raw mode."""
    reactor = ThreadRecordingReactor()
    with create_pipe_input() as keyboard:
        terminal = TerminalInput(
            reactor,
            ChatState(),
            never_called_directly,
            prompt_input=keyboard,
            prompt_output=DummyOutput(),
        )
        terminal.start()
        keyboard.send_text("typed but not sent")
        terminal.request_stop()
        terminal.join()
        assert reactor.calls.empty()


def test_pipe_input_hands_over_each_line_then_the_end() -> None:
    """Bytes from a pipe are decoded leniently and delivered in order."""
    reactor = ThreadRecordingReactor()
    lines: list[str] = []
    ended: list[bool] = []
    stream = io.BytesIO(b"first\nsecond caf\xe9\n")
    PipeInput(reactor, stream, lines.append, lambda: ended.append(True)).start()
    calls = [reactor.calls.get(timeout=WAIT) for _ in range(3)]
    assert {name for name, _, _ in calls} == {"chatd-pipe-input"}
    for _, function, args in calls:
        function(*args)
    assert lines == ["first\n", "second caf\ufffd\n"]
    assert ended == [True]


def test_a_bare_passwd_asks_old_and_new_twice_and_sends_the_tab_form() -> None:
    """/passwd alone: old, new, again (all unseen); spaces fine; a mismatch sends nothing."""
    reactor = ThreadRecordingReactor()
    with create_pipe_input() as keyboard:
        terminal = TerminalInput(
            reactor,
            ChatState(),
            never_called_directly,
            prompt_input=keyboard,
            prompt_output=DummyOutput(),
        )
        terminal.start()
        keyboard.send_text("/passwd\rmy old pass\rnew pass one\rnew pass two\r")
        keyboard.send_text("/passwd\rmy old pass\rmy new pass\rmy new pass\r")
        assert reactor.calls.get(timeout=WAIT)[2] == (
            SendLine("/password my old pass\tmy new pass"),
        )
        keyboard.send_text("/quit\r")
        assert reactor.calls.get(timeout=WAIT)[2] == (Quit("/quit"),)
        terminal.join()


def test_a_pasted_block_of_lines_is_handed_over_line_by_line() -> None:
    """A bracketed paste arrives as one text with newlines: each line goes on its own."""
    reactor = ThreadRecordingReactor()
    with create_pipe_input() as keyboard:
        terminal = TerminalInput(
            reactor,
            ChatState(),
            never_called_directly,
            prompt_input=keyboard,
            prompt_output=DummyOutput(),
        )
        terminal.start()
        keyboard.send_text("\x1b[200~first\r\n\r\nsecond\r/join #dev\x1b[201~\r")
        lines = [reactor.calls.get(timeout=WAIT)[2] for _ in range(3)]
        assert lines == [(SendLine("first"),), (SendLine("second"),), (SendLine("/join #dev"),)]
        keyboard.send_text("/quit\r")
        assert reactor.calls.get(timeout=WAIT)[2] == (Quit("/quit"),)
        terminal.join()
