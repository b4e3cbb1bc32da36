"""The web door end to end: the real ``twistd``, Debian's Chromium driven by Playwright.

Each test starts the server with the web door on a free loopback port and
drives the page as a person would: typing into the form and the input box,
clicking, and waiting (with deadlines) for what should appear. Line-protocol
users take part through ``tests/serverproc.LineClient``. The desktop and
phone screenshots in ``docs/screenshots/`` (light and dark) are taken here,
so ``docs/web.md`` shows the page as it is.

Playwright's own browser download is never used: ``executable_path`` is
``/usr/bin/chromium`` (``scripts/install-test-programs`` installs it).
"""

import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.programs import require_module, require_program
from tests.serverproc import ROOT, ServerProcess

WEB_LISTENING = re.compile(r"chatd web listening on tcp \S+ (\d+)")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = ROOT / "docs" / "screenshots"
DESKTOP = {"width": 1280, "height": 760}
PHONE = {"width": 390, "height": 760}
# Milliseconds Playwright waits for something to appear before the test fails.
WAIT_MS = 30_000
# The backoff's delays add up to a minute by the sixth attempt: room for a slow restart.
RECONNECT_MS = 90_000


@pytest.fixture(scope="module")
def browser():
    """One headless Chromium for the module (contexts keep the tests apart)."""
    executable = require_program("chromium", "chromium")
    require_module("playwright.sync_api", "playwright")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


class WebServer:
    """The real server with both doors on loopback; ``url`` is the page."""

    def __init__(self, directory) -> None:
        self.process = ServerProcess(
            directory, env={"CHATD_WEB_LISTEN": "tcp:0:interface=127.0.0.1"}
        )
        self.web_port: int | None = None

    def start(self) -> "WebServer":
        self.process.start()
        self.web_port = int(self.process.wait_for(WEB_LISTENING).group(1))
        # A restart keeps the page's address, as a real server's would.
        self.process.env["CHATD_WEB_LISTEN"] = f"tcp:{self.web_port}:interface=127.0.0.1"
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}/"


@pytest.fixture
def web_server(tmp_path):
    """A started ``WebServer``; killed after the test."""
    server = WebServer(tmp_path).start()
    yield server
    server.process.stop()


def open_page(browser, server, viewport=DESKTOP, color_scheme="light"):
    """A fresh browser context (its own cookies and storage) on the chat page."""
    context = browser.new_context(viewport=viewport, color_scheme=color_scheme)
    context.set_default_timeout(WAIT_MS)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.errors = errors
    page.goto(server.url)
    return page


def enter(page, name, password="password1", register=True):
    """Register (then log in, which the page does itself) or log in; wait for the chat."""
    page.fill("#login-name", name)
    page.fill("#login-password", password)
    page.click("#register-button" if register else "#login-button")
    page.wait_for_selector("#chat:not([hidden])")
    page.wait_for_selector(f"#me-name:text-is('{name}')")


def say(page, text):
    """Type a line into the input box and press Enter."""
    page.fill("#input", text)
    page.press("#input", "Enter")


def message(page, text):
    """The message paragraph with exactly ``text``, once it appears."""
    locator = page.locator("#messages p.text", has_text=text).last
    locator.wait_for()
    return locator


def choose_room(page, name):
    """Click a room in the sidebar."""
    page.locator("#room-list button", has_text=name).click()
    page.wait_for_selector(f"#view-name:text-is('{name}')")


def test_two_people_chat_in_lobby_and_a_new_room_and_by_dm(browser, web_server):
    """Two browser contexts register, log in, see each other join, chat, DM; screenshots."""
    alice = open_page(browser, web_server)
    enter(alice, "alice")
    bob = open_page(browser, web_server, color_scheme="dark")
    enter(bob, "bob")
    alice.locator("#messages li.event", has_text="bob joined").wait_for()
    alice.locator("#member-list li", has_text="bob").wait_for()

    say(alice, "hi bob, welcome to chatd")
    message(bob, "hi bob, welcome to chatd")
    say(bob, "thanks! links work too: https://example.com/docs")
    link = message(alice, "links work too").locator("a")
    assert link.get_attribute("href") == "https://example.com/docs"
    assert link.get_attribute("rel") == "noopener noreferrer nofollow"

    # A new room, by the Join button.
    alice.click("#join-button")
    alice.fill("#ask-input", "#dev")
    alice.press("#ask-input", "Enter")
    alice.wait_for_selector("#view-name:text-is('#dev')")
    say(bob, "/join #dev")
    bob.wait_for_selector("#view-name:text-is('#dev')")
    alice.locator("#messages li.event", has_text="bob joined").wait_for()
    say(bob, "the build is green")
    message(alice, "the build is green")
    say(alice, "<script>window.owned = true</script><b>bold?</b>")
    shown = message(bob, "<script>")
    assert shown.inner_text() == "<script>window.owned = true</script><b>bold?</b>"
    assert shown.locator("script, b").count() == 0
    assert bob.evaluate("window.owned") is None

    # The room's creator is its operator: marked, and the Topic button works.
    bob.locator("#member-list li.operator", has_text="@alice").wait_for()
    alice.click("#topic-button")
    alice.fill("#ask-input", "release on friday")
    alice.press("#ask-input", "Enter")
    bob.wait_for_selector("#view-topic:text-is('release on friday')")
    bob.locator("#messages li.event", has_text="alice set the topic").wait_for()
    say(alice, "/me waves")
    bob.locator("#messages li.action", has_text="alice waves").wait_for()

    # A direct message, and its unread badge.
    choose_room(bob, "#lobby")
    bob.locator("#member-list li", has_text="alice").hover()
    bob.locator("#member-list li", has_text="alice").get_by_role("button", name="Message").click()
    bob.wait_for_selector("#view-name:text-is('alice')")
    say(bob, "psst: lunch at noon?")
    alice.locator("#dm-list .badge").wait_for()
    assert alice.title().startswith("(1) ")
    alice.locator("#dm-list button", has_text="bob").click()
    message(alice, "psst: lunch at noon?")
    say(alice, "sure")
    message(bob, "sure")
    assert alice.errors == [] and bob.errors == []

    choose_room(alice, "#dev")
    screenshot(alice, "desktop-light")
    screenshot(bob, "desktop-dark")


def screenshot(page, name):
    """Save the page into docs/screenshots/ (the docs show these)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"))


def test_a_browser_user_and_a_line_user_talk_both_ways(browser, web_server):
    """The page and ``nc`` meet in #lobby and by DM."""
    page = open_page(browser, web_server)
    enter(page, "alice")
    bob = web_server.process.connect()
    bob.login("bob")
    page.locator("#messages li.event", has_text="bob joined").wait_for()
    say(page, "hello from the browser")
    bob.until(lambda line: line == "MSG #lobby alice hello from the browser")
    assert bob.command("hello from nc")[-1] == "OK say #lobby"
    message(page, "hello from nc")
    assert bob.command("/msg alice a direct one") == [
        "DM bob alice a direct one", "OK msg alice delivered"
    ]
    page.locator("#dm-list button", has_text="bob").click()
    message(page, "a direct one")
    say(page, "and back")
    bob.until(lambda line: line == "DM alice bob and back")


def test_the_page_reconnects_logs_in_again_and_rejoins_after_a_restart(browser, web_server):
    """A server restart: the page says so, keeps the typed text, and comes back in its rooms."""
    page = open_page(browser, web_server)
    enter(page, "alice")
    say(page, "/join #ops")
    page.wait_for_selector("#view-name:text-is('#ops')")
    page.fill("#input", "half-typed thought")

    web_server.process.restart()
    page.locator("#status", has_text="Reconnecting").wait_for()
    # The page's own backoff brings it back (1, 2, 4 ... s while the server starts).
    page.wait_for_selector("#status", state="hidden", timeout=RECONNECT_MS)
    page.wait_for_selector("#connection.online")
    assert page.input_value("#input") == "half-typed thought"

    bob = web_server.process.connect()
    bob.login("bob")
    bob.command("/join #ops")
    page.locator("#member-list li", has_text="bob").wait_for()
    bob.command("/say #ops still here?")
    message(page, "still here?")
    page.press("#input", "Enter")
    bob.until(lambda line: line == "MSG #ops alice half-typed thought")
    assert page.errors == []


def test_a_dm_stored_while_away_appears_at_login(browser, web_server):
    """``STORED`` lines become the conversation, marked unread, at login."""
    page = open_page(browser, web_server)
    enter(page, "alice")
    page.click("#logout-button")
    page.wait_for_selector("#login:not([hidden])")
    bob = web_server.process.connect()
    bob.login("bob")
    assert bob.command("/msg alice while you were out")[-1] == "OK msg alice stored"

    enter(page, "alice", register=False)
    page.locator("#dm-list .badge", has_text="1").wait_for()
    page.locator("#dm-list button", has_text="bob").click()
    assert "stored" in message(page, "while you were out").get_attribute("class")


@pytest.fixture
def foreign_site():
    """Another site on this computer (a plain HTTP server on 127.0.0.1): its page's URL.

    Local, because Chromium itself refuses a public page's connections to
    loopback; the server's own Origin check is what this must reach.
    """
    body = b"<!doctype html><title>elsewhere</title><p>another site</p>"

    class Page(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Page)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()
    thread.join(10)


def test_a_page_from_another_origin_cannot_open_the_socket(browser, web_server, foreign_site):
    """A foreign page's WebSocket is refused at the handshake (403); the page's own opens."""
    probe = """url => new Promise(resolve => {
        const socket = new WebSocket(url, ["chatd.v1"]);
        socket.onopen = () => { socket.close(); resolve("open"); };
        socket.onclose = () => resolve("refused");
    })"""
    socket_url = f"ws://127.0.0.1:{web_server.web_port}/ws"
    elsewhere = browser.new_context().new_page()
    elsewhere.goto(foreign_site)
    assert elsewhere.evaluate(probe, socket_url) == "refused"
    origin = foreign_site.rstrip("/")
    web_server.process.wait_for(f"refused origin {re.escape(origin)} for host")
    own = open_page(browser, web_server)
    assert own.evaluate(probe, socket_url) == "open"


def test_phone_sized_screens_and_the_dark_theme(browser, web_server):
    """At phone width the lists slide over the messages; screenshots in both themes."""
    desk = open_page(browser, web_server)
    enter(desk, "carol")
    say(desk, "morning! the deploy went fine")
    for scheme in ("light", "dark"):
        page = open_page(browser, web_server, viewport=PHONE, color_scheme=scheme)
        enter(page, f"dan{scheme}")
        message(page, "morning! the deploy went fine")
        assert not page.locator("#sidebar").is_visible() or page.evaluate(
            "() => document.getElementById('sidebar').getBoundingClientRect().right <= 0"
        )
        say(page, f"hello from a phone ({scheme})")
        screenshot(page, f"phone-{scheme}")
        page.click("#show-rooms")
        page.wait_for_function(
            "() => document.getElementById('sidebar').getBoundingClientRect().left >= 0"
        )
        page.locator("#room-list button", has_text="#lobby").click()
        page.wait_for_function(
            "() => document.getElementById('sidebar').getBoundingClientRect().right <= 0"
        )
        assert page.errors == []
