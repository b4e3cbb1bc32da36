"""Password hashing: bcrypt over a SHA-256 pre-hash, in worker processes of its own.

bcrypt reads at most 72 bytes (bcrypt 5 raises past that), yet chatd
promises that every byte of a password of up to 1024 bytes counts. So the
password is first reduced with HMAC-SHA256 and base64-encoded: 44 ASCII
bytes, never a NUL, well inside bcrypt's limit. The stored form names the
scheme so a later chatd can tell old hashes from new ones.
"""

import base64
import hashlib
import hmac
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import bcrypt
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure

from chatd.errors import ChatError

SCHEME = "bcrypt-sha256$"
_PREHASH_KEY = b"chatd password v1"
# How much lower than the reactor's the bcrypt workers' CPU priority is (nice
# steps): where they share a core with the reactor, the kernel lets the
# reactor run as soon as a line arrives instead of after a slice of hashing.
BCRYPT_NICENESS = 19
# How often a bcrypt worker checks that its server still runs.
WORKER_WATCH_SECONDS = 1.0


def _start_worker(niceness: int, server_pid: int) -> None:
    """In each bcrypt worker process: lower its priority; leave Ctrl-C and hang-ups
    to the server, which stops its workers itself; end with the server."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    os.nice(niceness)
    threading.Thread(target=_exit_with_server, args=(server_pid,), daemon=True).start()


def _exit_with_server(server_pid: int) -> None:
    """In a worker: exit once the server is gone, even killed with SIGKILL.

    A worker waiting for its next job would otherwise wait forever: it holds
    both ends of the job queue's pipe, so the server's death never reaches it.
    """
    while os.getppid() == server_pid:
        time.sleep(WORKER_WATCH_SECONDS)
    os._exit(0)


def _timed(function, *args) -> tuple[Any, float, float]:
    """In a worker: run ``function`` and say when it started and ended (system monotonic)."""
    started = time.monotonic()
    result = function(*args)
    return result, started, time.monotonic()


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
    """Runs bcrypt in a small pool of worker processes, so chat never waits behind it.

    Processes rather than threads: a bcrypt thread shares the interpreter
    lock with the reactor, and handing that lock back and forth while
    logins pour in delayed chat lines by tens of milliseconds.

    It also keeps a dummy hash at the configured cost: checking a password
    for an unknown user against it costs the same as a wrong password.
    """

    def __init__(
        self,
        reactor,
        rounds: int,
        workers: int = 2,
        on_timing: Callable[[str, float, float], None] | None = None,
        *,
        queue_limit: int | None = None,
    ) -> None:
        """``on_timing(operation, waited, took)``, if given, hears of every bcrypt job.

        ``operation`` is ``hash`` or ``check``; ``waited`` is the seconds the
        job queued for a worker, ``took`` the seconds bcrypt ran. It is
        called on the reactor thread.

        ``queue_limit``: how many jobs may wait for a worker (None: no limit).
        Past it, ``hash`` and ``check`` fail at once with ``too-many-attempts``
        rather than queue without end behind a flood of logins.
        """
        self._reactor = reactor
        self._on_timing = on_timing
        self.workers = workers
        self.queue_limit = queue_limit
        self.pending = 0
        self.rounds = rounds
        self.pool = None
        self._dummy_hash: str | None = None
        self._waiting_for_dummy: list[Deferred] = []

    def start(self) -> Deferred:
        """Start the workers and compute the dummy hash in one of them."""
        self._open_pool()
        computing = self._run(hash_password, b"no such user's password", self.rounds)
        return computing.addCallback(self._keep_dummy)

    def _open_pool(self) -> None:
        """A new pool, every worker started now rather than in the middle of a login.

        Started with ``spawn``: a fork would copy the reactor's threads' locks.
        """
        self.pool = ProcessPoolExecutor(
            self.workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start_worker,
            initargs=(BCRYPT_NICENESS, os.getpid()),
        )
        # Each job submitted while no worker is idle starts one more.
        for _ in range(self.workers):
            self.pool.submit(os.getpid)

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

    def stop(self) -> Deferred:
        """Stop the workers once their current hash is done; jobs still queued are dropped.

        Fires when they have exited and the pool's queues are released. The
        waiting happens on a thread: at most one hash long, but not the
        reactor's to spend. Waiting at all matters because twistd ends by
        re-raising SIGTERM, which skips the interpreter's exit handlers.
        """
        if self.pool is None:
            return succeed(None)
        pool, self.pool = self.pool, None
        return deferToThreadPool(
            self._reactor, self._reactor.getThreadPool(), pool.shutdown, True, cancel_futures=True
        )

    @property
    def queued(self) -> int:
        """How many bcrypt jobs wait for a worker."""
        return max(self.pending - self.workers, 0)

    def _run(self, function, *args) -> Deferred:
        """Run ``function(*args)`` in a worker; fire with its result on the reactor thread.

        A worker that died (killed, out of memory) breaks the pool: the jobs it
        had fail, and the next job starts a new pool.
        """
        done: Deferred = Deferred()
        queued_at = time.monotonic()
        try:
            job = self.pool.submit(_timed, function, *args)
        except BrokenProcessPool:
            self.pool.shutdown(wait=False, cancel_futures=True)
            self._open_pool()
            job = self.pool.submit(_timed, function, *args)
        operation = "check" if function is check_password else "hash"
        # The pool's own thread runs this: hand the outcome to the reactor.
        job.add_done_callback(
            lambda job: self._reactor.callFromThread(
                self._job_done, job, done, operation, queued_at
            )
        )
        return done

    def _job_done(self, job: Future, done: Deferred, operation: str, queued_at: float) -> None:
        error = job.exception()
        if error is not None:
            done.errback(Failure(error))
            return
        result, started, ended = job.result()
        if self._on_timing is not None:
            self._on_timing(operation, started - queued_at, ended - started)
        done.callback(result)

    def _bounded(self, function, *args) -> Deferred:
        """Run a job on the pool, unless ``queue_limit`` jobs already wait for a thread."""
        if self.queue_limit is not None and self.pending >= self.workers + self.queue_limit:
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
