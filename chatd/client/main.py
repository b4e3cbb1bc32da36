"""``chatd-client``: command line, wiring, and the run of the reactor."""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from collections.abc import Sequence

from chatd import __version__
from chatd.client.connection import FailoverEndpoint, host_text, make_endpoint, parse_host
from chatd.client.render import Renderer, colour_wanted
from chatd.client.runners import (
    EXIT_LOGIN_FAILED,
    EXIT_USAGE,
    InteractiveClient,
    PipeClient,
)
from chatd.client.session import ChatSession
from chatd.client.state import ChatState

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8004
PASSWORD_VARIABLE = "CHATD_PASSWORD"


def build_parser() -> argparse.ArgumentParser:
    """The command line of chatd-client."""
    parser = argparse.ArgumentParser(
        prog="chatd-client",
        description="Chat on a chatd server. Type /help once connected.",
        epilog=(
            f"The password comes from ${PASSWORD_VARIABLE} or is asked for without echo; "
            "it is never taken from the command line. When standard input is not a "
            "terminal, each line is sent and its reply awaited, and the exit code says "
            "how it went (see docs/client.md)."
        ),
    )
    parser.add_argument(
        "--host",
        action="append",
        metavar="HOST[:PORT]",
        help=(
            f"server address ({DEFAULT_HOST}); give it several times for the nodes of a "
            "cluster: a lost connection is made again to the next one"
        ),
    )
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help="server port (%(default)s)"
    )
    parser.add_argument("--tls", action="store_true", help="connect with TLS")
    parser.add_argument(
        "--ca",
        metavar="FILE",
        help="PEM certificate to trust for the server (e.g. its self-signed one); implies --tls",
    )
    parser.add_argument("--user", metavar="NAME", help="log in as NAME on connecting")
    parser.add_argument("--raw", action="store_true", help="show protocol lines as they are")
    parser.add_argument("--version", action="version", version=f"chatd-client {__version__}")
    return parser


def read_password(user: str, *, interactive: bool) -> str | None:
    """The password for ``--user``: from the environment, else asked for without echo.

    In a pipe the question goes to the controlling terminal, never to the
    pipe; with no terminal at all there is no password.
    """
    password = os.environ.get(PASSWORD_VARIABLE)
    if password:
        return password
    if not interactive:
        try:
            with open("/dev/tty"):
                pass
        except OSError:
            return None
    try:
        return getpass.getpass(f"password for {user}: ")
    except (EOFError, KeyboardInterrupt):
        return None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the client; returns the exit code."""
    parser = build_parser()
    options = parser.parse_args(argv)
    try:
        servers = [parse_host(text, options.port) for text in options.host or [DEFAULT_HOST]]
    except ValueError as problem:
        parser.error(f"--host: {problem}")
    interactive = sys.stdin.isatty()
    ca_pem = None
    if options.ca:
        try:
            with open(options.ca, "rb") as ca_file:
                ca_pem = ca_file.read()
        except OSError as problem:
            print(f"chatd-client: cannot read --ca {options.ca}: {problem}", file=sys.stderr)
            return EXIT_USAGE
    password = None
    if options.user:
        password = read_password(options.user, interactive=interactive)
        if password is None:
            print(
                f"chatd-client: no password for {options.user}: set {PASSWORD_VARIABLE}",
                file=sys.stderr,
            )
            return EXIT_LOGIN_FAILED

    from twisted.internet import reactor

    state = ChatState()
    renderer = Renderer(
        colour=colour_wanted(sys.stdout), whoami=state.me, is_operator=state.is_operator
    )
    addresses = [host_text(host, port) for host, port in servers]
    endpoint = FailoverEndpoint([
        make_endpoint(reactor, host, port, tls=options.tls or ca_pem is not None, ca_pem=ca_pem)
        for host, port in servers
    ])
    run = _run_interactive if interactive else _run_pipe
    return run(reactor, state, renderer, endpoint, addresses, options, password)


def _credentials(options: argparse.Namespace, password: str | None) -> tuple[str, str] | None:
    return (options.user, password) if options.user and password is not None else None


def _follow(endpoint: FailoverEndpoint, session: ChatSession, addresses: list[str]) -> None:
    """Keep the session's address the server each connection went to."""

    def connected_to(index: int) -> None:
        session.address = addresses[index]

    endpoint.on_connected = connected_to


def _run_interactive(reactor, state, renderer, endpoint, addresses, options, password) -> int:
    from prompt_toolkit.patch_stdout import patch_stdout

    from chatd.client.terminal import TerminalInput

    def show(text: str) -> None:
        # sys.stdout is prompt_toolkit's proxy here: it prints above the prompt.
        print(text, flush=True)

    session = ChatSession(
        state,
        renderer,
        show=show,
        raw=options.raw,
        raw_terminal=sys.stdout.isatty(),
        address=", ".join(addresses),
    )
    _follow(endpoint, session, addresses)
    session.credentials = _credentials(options, password)
    client = InteractiveClient(
        reactor, session, endpoint, show=show, stop_reactor=_stopper(reactor)
    )
    with patch_stdout(raw=True):
        terminal = TerminalInput(reactor, state, client.deliver)
        client.attach_terminal(terminal)
        show(renderer.notice(f"connecting to {', '.join(addresses)}"))
        terminal.start()
        reactor.callWhenRunning(client.start)
        reactor.run()
        terminal.join()
    return client.exit_code


def _run_pipe(reactor, state, renderer, endpoint, addresses, options, password) -> int:
    from chatd.client.terminal import PipeInput

    def show(text: str) -> None:
        print(text, flush=True)

    def show_problem(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    session = ChatSession(
        state,
        renderer,
        show=show,
        show_problem=show_problem,
        raw=options.raw,
        raw_terminal=sys.stdout.isatty(),
        address=", ".join(addresses),
        show_greeting=False,
    )
    _follow(endpoint, session, addresses)
    session.credentials = _credentials(options, password)
    client: PipeClient

    def start_input() -> None:
        PipeInput(reactor, sys.stdin.buffer, client.line_available, client.input_ended).start()

    client = PipeClient(
        reactor,
        session,
        endpoint,
        show=show,
        show_problem=show_problem,
        stop_reactor=_stopper(reactor),
        start_input=start_input,
    )
    reactor.callWhenRunning(client.start)
    reactor.run()
    return client.exit_code


def _stopper(reactor):
    def stop() -> None:
        if reactor.running:
            reactor.stop()

    return stop
