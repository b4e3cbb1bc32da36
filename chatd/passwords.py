"""Password hashing: bcrypt over a SHA-256 pre-hash, on a thread pool of its own.

bcrypt reads at most 72 bytes (bcrypt 5 raises past that), yet chatd
promises that every byte of a password of up to 1024 bytes counts. So the
password is first reduced with HMAC-SHA256 and base64-encoded: 44 ASCII
bytes, never a NUL, well inside bcrypt's limit. The stored form names the
scheme so a later chatd can tell old hashes from new ones.
"""

import base64
import hashlib
import hmac
import time
from collections.abc import Callable

import bcrypt
from twisted.internet.defer import Deferred, fail
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

from chatd.errors import ChatError

SCHEME = "bcrypt-sha256$"
_PREHASH_KEY = b"chatd password v1"


def _prehash(password: bytes) -> bytes:
    digest = hmac.new(_PREHASH_KEY, password, hashlib.sha256).digest()
    return base64.b64encode(digest)


def hash_password(password: bytes, rounds: int) -> str:
    """Hash ``password`` at bcrypt cost ``rounds``; blocking, so never on the reactor."""
    hashed = bcrypt.hashpw(_prehash(password), bcrypt.gensalt(rounds))
    return SCHEME + hashed.decode("ascii")


def check_password(password: bytes, stored: str) -> bool:
    """Tell whether ``password`` matches a stored hash; blocking, like ``hash_password``."""
    if not stored.startswith(SCHEME):
        return False
    return bcrypt.checkpw(_prehash(password), stored[len(SCHEME) :].encode("ascii"))


class PasswordHasher:
    """Runs bcrypt on its own small thread pool, so chat never waits behind it.

    It also keeps a dummy hash at the configured cost: checking a password
    for an unknown user against it costs the same as a wrong password.
    """

    def __init__(
        self,
        reactor,
        rounds: int,
        threads: int = 2,
        on_timing: Callable[[str, float, float], None] | None = None,
        *,
        queue_limit: int | None = None,
    ) -> None:
        """``on_timing(operation, waited, took)``, if given, hears of every bcrypt job.

        ``operation`` is ``hash`` or ``check``; ``waited`` is the seconds the
        job queued for a thread, ``took`` the seconds bcrypt ran. It is called
        on the pool's thread, so it must be thread-safe (metrics are).

        ``queue_limit``: how many jobs may wait for a thread (None: no limit).
        Past it, ``hash`` and ``check`` fail at once with ``too-many-attempts``
        rather than queue without end behind a flood of logins.
        """
        self._reactor = reactor
        self._on_timing = on_timing
        self.threads = threads
        self.queue_limit = queue_limit
        self.pending = 0
        self.rounds = rounds
        self.pool = ThreadPool(minthreads=0, maxthreads=threads, name="chatd-bcrypt")
        self._dummy_hash: str | None = None
        self._waiting_for_dummy: list[Deferred] = []

    def start(self) -> Deferred:
        """Start the pool and compute the dummy hash on it."""
        self.pool.start()
        computing = self._run(hash_password, b"no such user's password", self.rounds)
        return computing.addCallback(self._keep_dummy)

    def _keep_dummy(self, dummy: str) -> None:
        self._dummy_hash = dummy
        waiting, self._waiting_for_dummy = self._waiting_for_dummy, []
        for ready in waiting:
            ready.callback(dummy)

    def _dummy(self) -> Deferred:
        ready: Deferred = Deferred()
        if self._dummy_hash is None:
            self._waiting_for_dummy.append(ready)
        else:
            ready.callback(self._dummy_hash)
        return ready

    def stop(self) -> None:
        """Stop the pool, letting a running hash finish."""
        self.pool.stop()

    @property
    def queued(self) -> int:
        """How many bcrypt jobs wait for a thread."""
        return self.pool._queue.qsize()

    def _run(self, function, *args) -> Deferred:
        if self._on_timing is None:
            return deferToThreadPool(self._reactor, self.pool, function, *args)
        return deferToThreadPool(
            self._reactor, self.pool, self._timed, time.perf_counter(), function, *args
        )

    def _timed(self, queued_at: float, function, *args):
        started = time.perf_counter()
        try:
            return function(*args)
        finally:
            operation = "check" if function is check_password else "hash"
            self._on_timing(operation, started - queued_at, time.perf_counter() - started)

    def _bounded(self, function, *args) -> Deferred:
        """Run a job on the pool, unless ``queue_limit`` jobs already wait for a thread."""
        if self.queue_limit is not None and self.pending >= self.threads + self.queue_limit:
            return fail(
                ChatError("too-many-attempts", "the server is busy checking passwords; try again")
            )
        self.pending += 1
        running = self._run(function, *args)
        running.addBoth(self._finished)
        return running

    def _finished(self, result):
        self.pending -= 1
        return result

    def hash(self, password: bytes) -> Deferred:
        """Fire with the stored form of ``password``."""
        return self._bounded(hash_password, password, self.rounds)

    def check(self, password: bytes, stored: str | None) -> Deferred:
        """Fire with whether ``password`` matches ``stored``; None means no account."""
        if stored is None:
            checking = self._dummy().addCallback(
                lambda dummy: self._bounded(check_password, password, dummy)
            )
            return checking.addCallback(lambda _: False)
        return self._bounded(check_password, password, stored)
