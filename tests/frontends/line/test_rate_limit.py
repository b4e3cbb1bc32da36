"""The per-session line rate limit (CHATD_RATE_LIMIT) and the flood cut-off (CHATD_FLOOD_LIMIT)."""

from twisted.internet import task

from chatd.auth.throttles import TokenBucket
from chatd.config import Config, RateLimit
from tests.support import ChatHarness

LIMITED = "ERR rate-limited over 10 lines a second (bursts of 40); line dropped"


def limited_harness(**settings) -> ChatHarness:
    """A harness with the shipped rate limit (10/40) unless ``settings`` say otherwise."""
    return ChatHarness(Config(bcrypt_rounds=4, **settings))


def pings(client, count: int, start: int = 0) -> list[str]:
    """Send ``count`` pings in one read; return the replies."""
    data = b"".join(f"/ping {n}\n".encode() for n in range(start, start + count))
    client.feed(data)
    return client.lines()


def test_token_bucket_starts_full_and_refills_at_its_rate():
    """A 10/40 bucket gives 40 at once, then one per tenth of a second, never more than 40."""
    clock = task.Clock()
    clock.advance(1_764_064_800)
    bucket = TokenBucket(10.0, 40, clock)
    assert [bucket.take() for _ in range(41)] == [True] * 40 + [False]
    clock.advance(0.1)
    assert bucket.take() and not bucket.take()
    clock.advance(3600)
    assert sum(bucket.take() for _ in range(100)) == 40


def test_token_bucket_does_not_refill_before_a_whole_token():
    """Just short of a token's worth of time gives nothing."""
    clock = task.Clock()
    bucket = TokenBucket(2.0, 1, clock)
    assert bucket.take()
    clock.advance(0.49)
    assert not bucket.take()
    clock.advance(0.01)
    assert bucket.take()


def test_the_burst_is_answered_and_the_next_line_is_dropped():
    """The default 10/40: forty lines at once are fine, the forty-first gets ERR rate-limited."""
    client = limited_harness().client()
    replies = pings(client, 41)
    assert replies[:40] == [f"OK ping {n}" for n in range(40)]
    assert replies[40] == LIMITED
    assert not client.transport.closed


def test_the_bucket_refills_at_the_rate():
    """After the burst, one line per tenth of a second gets through."""
    harness = limited_harness()
    client = harness.client()
    pings(client, 40)
    harness.clock.advance(0.1)
    assert pings(client, 2, start=100) == ["OK ping 100", LIMITED]
    harness.clock.advance(1.0)
    assert pings(client, 11, start=200) == [f"OK ping {n}" for n in range(200, 210)] + [LIMITED]


def test_a_person_typing_is_never_limited():
    """Ten minutes of a line every second, with a 30-line paste each minute: never an ERR."""
    harness = limited_harness()
    client = harness.client()
    client.login("alice")
    harness.clock.advance(1.0)
    for minute in range(10):
        replies = client.send(*[f"paste {minute} line {n}" for n in range(30)])
        assert not [line for line in replies if line.startswith("ERR")], replies
        for second in range(60):
            harness.clock.advance(1.0)
            assert client.send(f"typed {minute}:{second}")[-1] == "OK say #lobby"


def test_a_flood_gets_errors_then_bye_flood():
    """Past the burst, CHATD_FLOOD_LIMIT (50) dropped lines get ERR; the next one gets BYE flood."""
    client = limited_harness().client()
    replies = pings(client, 40 + 51 + 10)
    assert replies[:40] == [f"OK ping {n}" for n in range(40)]
    assert replies[40:90] == [LIMITED] * 50
    assert replies[90:] == ["BYE flood"]
    assert client.transport.closed


def test_dropped_lines_are_forgiven_one_a_second():
    """A second later one more dropped line is tolerated, and then the flood limit holds."""
    harness = limited_harness()
    client = harness.client()
    assert pings(client, 90)[40:] == [LIMITED] * 50
    harness.clock.advance(1.0)
    # The second refilled ten lines and forgave one dropped line.
    replies = pings(client, 12, start=100)
    assert replies == [f"OK ping {n}" for n in range(100, 110)] + [LIMITED, "BYE flood"]


def test_the_flood_limit_is_a_setting():
    """CHATD_FLOOD_LIMIT=1: the first dropped line gets ERR, the second BYE flood."""
    client = limited_harness(rate_limit=RateLimit(1.0, 2), flood_limit=1).client()
    assert pings(client, 5) == ["OK ping 0", "OK ping 1", "ERR rate-limited over 1 lines a "
                                "second (bursts of 2); line dropped", "BYE flood"]


def test_the_rate_limit_can_be_off():
    """CHATD_RATE_LIMIT=off: a thousand lines at once are all answered."""
    client = limited_harness(rate_limit=None).client()
    replies = pings(client, 1000)
    assert replies == [f"OK ping {n}" for n in range(1000)]


def test_every_kind_of_line_counts_before_login_too():
    """Over-long, badly encoded and logged-out lines all use the same bucket."""
    client = limited_harness(rate_limit=RateLimit(1.0, 3)).client()
    client.feed(b"x" * 5000 + b"\n" + b"\xff\xfe\n" + b"hello\n" + b"/ping late\n")
    assert client.lines() == [
        "ERR line-too-long lines are limited to 4096 bytes",
        "ERR bad-encoding lines must be UTF-8",
        "ERR auth-required log in first: /login <user> <password>",
        "ERR rate-limited over 1 lines a second (bursts of 3); line dropped",
    ]


def test_each_session_has_its_own_bucket():
    """One session flooding does not slow another from the same address."""
    harness = limited_harness()
    noisy, quiet = harness.client(), harness.client()
    pings(noisy, 200)
    assert noisy.transport.closed
    assert pings(quiet, 40) == [f"OK ping {n}" for n in range(40)]


def test_a_flooder_in_a_room_does_not_disturb_the_room():
    """Dropped lines are not posted; the others see only what got through, in order."""
    harness = limited_harness()
    bob = harness.logged_in("bob")
    mallory = harness.logged_in("mallory")
    bob.lines()
    mallory.send(*[f"spam {n}" for n in range(200)])
    seen = [line for line in bob.lines() if line.startswith("MSG")]
    # /register and /login took two lines of mallory's burst of forty.
    assert seen == [f"MSG #lobby mallory spam {n}" for n in range(38)]
    assert mallory.transport.closed
    assert bob.send("/who") == ["WHO #lobby bob", "OK who #lobby"]
