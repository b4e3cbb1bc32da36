"""The input thread: the keyboard through prompt_toolkit, or a pipe.

This is the only code that runs outside the reactor thread. It reads lines,
works out what they mean, and hands them to the reactor with
``reactor.callFromThread``; it never touches the connection.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import BinaryIO

from prompt_toolkit import PromptSession
from prompt_toolkit.history import DummyHistory
from prompt_toolkit.input import Input
from prompt_toolkit.layout.processors import Processor, Transformation, TransformationInput
from prompt_toolkit.output import Output

from chatd.client.commands import (
    Action,
    AskPassword,
    AskPasswordChange,
    ChatCompleter,
    Quit,
    RedactingHistory,
    SendLine,
    parse_input,
    password_change_line,
)
from chatd.client.state import ChatState


class HiddenInput(Processor):
    """Shows nothing of what is typed, not even how long it is (asterisks would)."""

    def apply_transformation(self, transformation_input: TransformationInput) -> Transformation:
        """Draw no characters and keep the cursor where the input starts."""
        return Transformation([], source_to_display=lambda _: 0, display_to_source=lambda _: 0)


class TerminalInput:
    """Reads the keyboard in its own thread with a prompt_toolkit PromptSession.

    Lines printed meanwhile (through ``patch_stdout``) appear above the prompt,
    so the line being typed is never garbled. Ctrl-D and Ctrl-C leave, like
    ``/quit``. ``prompt_input`` and ``prompt_output`` replace the terminal in
    tests.
    """

    def __init__(
        self,
        reactor,
        state: ChatState,
        deliver: Callable[[Action], None],
        *,
        prompt_input: Input | None = None,
        prompt_output: Output | None = None,
    ) -> None:
        self._reactor = reactor
        self._state = state
        self._deliver = deliver
        self._devices = {"input": prompt_input, "output": prompt_output}
        self._stopping = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chatd-input", daemon=True)
        self._prompt: PromptSession | None = None

    def start(self) -> None:
        """Start reading; returns once the prompt session exists."""
        self._thread.start()
        self._ready.wait()

    def redraw(self) -> None:
        """Draw the prompt again (its room or status changed); safe from any thread."""
        app = self._prompt.app if self._prompt is not None else None
        if app is not None:
            app.invalidate()

    def request_stop(self) -> None:
        """Make the input thread finish, from any thread."""
        self._stopping.set()
        app = self._prompt.app if self._prompt is not None else None
        loop = app.loop if app is not None else None
        if loop is None or loop.is_closed():
            return

        def exit_if_running() -> None:
            if app.is_running and not app.future.done():
                app.exit(exception=EOFError())

        try:
            loop.call_soon_threadsafe(exit_if_running)
        except RuntimeError:
            # The prompt's loop closed in between: the thread is past it.
            return

    def join(self) -> None:
        """Wait for the input thread, stopping it, so the terminal is left sane."""
        while self._thread.is_alive():
            # A prompt may start just after a stop request; asking again
            # until the thread is gone closes that gap.
            self.request_stop()
            self._thread.join(0.2)

    def _run(self) -> None:
        self._prompt = PromptSession(
            history=RedactingHistory(),
            completer=ChatCompleter(self._state.completion_snapshot),
            complete_while_typing=False,
            **self._devices,
        )
        self._password_prompt = PromptSession(
            history=DummyHistory(), input_processors=[HiddenInput()], **self._devices
        )
        self._ready.set()
        while not self._stopping.is_set():
            try:
                text = self._prompt.prompt(lambda: self._state.prompt_view().text())
            except (EOFError, KeyboardInterrupt):
                text = "/quit"
            if self._stopping.is_set():
                return
            # A paste of several lines (a terminal's bracketed paste) arrives as
            # one text: each of its lines is a line of its own.
            for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
                action = parse_input(line)
                if isinstance(action, AskPassword):
                    action = self._complete_with_password(action)
                elif isinstance(action, AskPasswordChange):
                    action = self._ask_password_change()
                if action is None:
                    continue
                self._reactor.callFromThread(self._deliver, action)
                if isinstance(action, Quit):
                    return

    def _ask_password_change(self) -> SendLine | None:
        """Ask for the old password and the new one twice, unseen; build the line."""
        try:
            old = self._password_prompt.prompt("old password: ")
            new = self._password_prompt.prompt("new password: ")
            if self._password_prompt.prompt("again: ") != new:
                print("! the two new passwords differ; nothing was sent")
                return None
        except (EOFError, KeyboardInterrupt):
            return None
        line = password_change_line(old, new)
        if line is None:
            print(
                "! nothing was sent: a password is empty, or the old one holds both"
                " a space and a TAB (the operator's chatd user passwd can reset it)"
            )
            return None
        return SendLine(line)

    def _complete_with_password(self, request: AskPassword) -> SendLine | None:
        try:
            password = self._password_prompt.prompt("password: ")
            if request.confirm and self._password_prompt.prompt("again: ") != password:
                print("! the two passwords differ; nothing was sent")
                return None
        except (EOFError, KeyboardInterrupt):
            return None
        return SendLine(f"{request.prefix} {password}")


class PipeInput:
    """Reads lines from a pipe in its own thread and hands each to the reactor."""

    def __init__(
        self,
        reactor,
        stream: BinaryIO,
        on_line: Callable[[str], None],
        on_end: Callable[[], None],
    ) -> None:
        self._reactor = reactor
        self._stream = stream
        self._on_line = on_line
        self._on_end = on_end
        # Daemon: a script may keep the pipe open after /quit, and the client
        # must still be able to exit.
        self._thread = threading.Thread(target=self._run, name="chatd-pipe-input", daemon=True)

    def start(self) -> None:
        """Start reading."""
        self._thread.start()

    def _run(self) -> None:
        for data in self._stream:
            self._reactor.callFromThread(self._on_line, data.decode("utf-8", "replace"))
        self._reactor.callFromThread(self._on_end)
