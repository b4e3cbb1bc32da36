"""Measure how long a login's password check answers for an unknown user, an account at
the configured bcrypt cost and one at a lower cost (padded) or a higher one (not).

    python scripts/login_timing.py [cost] [rounds]

It runs the real ``PasswordHasher`` (worker processes, the fair queue) on the real
reactor, one check at a time, and prints the median and spread of each kind. Results
belong in docs/security.md; tests never assert timings.
"""

import statistics
import sys
import time

from twisted.internet import defer, task

from chatd.auth.passwords import PasswordHasher, hash_password


@defer.inlineCallbacks
def main(reactor, cost: int = 12, rounds: int = 15):
    hasher = PasswordHasher(reactor, cost, 2)
    yield hasher.start()
    # A few hashes at the current cost first: what lower-cost checks are padded to.
    for _ in range(3):
        yield hasher.hash(b"warm up")
    kinds = {
        "unknown user": None,
        f"account at cost {cost}": hash_password(b"right", cost),
        f"account at cost {cost - 2} (padded)": hash_password(b"right", cost - 2),
        f"account at cost {cost + 1} (until its next login)": hash_password(b"right", cost + 1),
    }
    print(f"bcrypt cost {cost}, {rounds} wrong-password checks each, one at a time")
    for label, stored in kinds.items():
        took = []
        for _ in range(rounds):
            started = time.monotonic()
            yield hasher.check(b"wrong", stored)
            took.append(time.monotonic() - started)
        print(
            f"{label:45} median {statistics.median(took) * 1000:7.1f} ms"
            f"  min {min(took) * 1000:7.1f}  max {max(took) * 1000:7.1f}"
        )
    yield hasher.stop()


if __name__ == "__main__":
    task.react(main, [int(arg) for arg in sys.argv[1:]])
