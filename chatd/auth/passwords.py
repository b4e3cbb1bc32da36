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
from collections import OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import bcrypt
from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure

from chatd.core.errors import ChatError

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


def _padded(pad_to: float, function, *args) -> Any:
    """In a worker: run ``function``, then wait until ``pad_to`` seconds have passed.

    A check against a hash of a lower cost than the current one would answer
    sooner than a check of an unknown user (the dummy hash is at the current
    cost): waiting out the difference, in the worker so it is also busy as
    long, leaves nothing to tell them apart by.
    """
    started = time.monotonic()
    result = function(*args)
    left = pad_to - (time.monotonic() - started)
    if left > 0:
        time.sleep(left)
    return result


def _prehash(password: bytes) -> bytes:
    digest = hmac.new(_PREHASH_KEY, password, hashlib.sha256).digest()
    return base64.b64encode(digest)


def hash_password(password: bytes, rounds: int) -> str:
    """Hash ``password`` at bcrypt cost ``rounds``; blocking, so never on the reactor."""
    hashed = bcrypt.hashpw(_prehash(password), bcrypt.gensalt(rounds))
    return SCHEME + hashed.decode("ascii")


def hash_cost(stored: str | None) -> int | None:
    """The bcrypt cost of a stored hash, or None if it is not one of ours."""
    if stored is None or not stored.startswith(SCHEME):
        return None
    parts = stored[len(SCHEME) :].split("$")
    try:
        return int(parts[2])
    except (IndexError, ValueError):
        return None


def check_password(password: bytes, stored: str) -> bool:
    """Tell whether ``password`` matches a stored hash; blocking, like ``hash_password``."""
    if not stored.startswith(SCHEME):
        return False
    return bcrypt.checkpw(_prehash(password), stored[len(SCHEME) :].encode("ascii"))


class _Job:
    """One bcrypt job waiting in the fair queue for a worker."""

    __slots__ = ("address", "args", "done", "function", "queued_at", "ticket")

    def __init__(self, function, args: tuple, address: str | None) -> None:
        # The cluster's count of the address's jobs (chatd/cluster/policy.py), if shared.
        self.ticket = None
        self.function = function
        self.args = args
        self.address = address
        self.done: Deferred = Deferred()
        self.queued_at = time.monotonic()


class FairQueue:
    """Waiting bcrypt jobs as a queue of queues: round-robin over addresses, and
    within an address over accounts, so one address (or one account) flooding
    the server waits behind itself and not in front of everyone else."""

    def __init__(self) -> None:
        self._by_address: OrderedDict[str | None, OrderedDict[str | None, deque]] = OrderedDict()
        self.waiting = 0

    def __len__(self) -> int:
        return self.waiting

    def push(self, job: _Job, account: str | None) -> None:
        """Queue ``job`` at the end of its address's and account's queue."""
        accounts = self._by_address.setdefault(job.address, OrderedDict())
        accounts.setdefault(account, deque()).append(job)
        self.waiting += 1

    def pop(self) -> _Job:
        """The next job: the first of the next account of the next address in turn."""
        address, accounts = next(iter(self._by_address.items()))
        account, jobs = next(iter(accounts.items()))
        job = jobs.popleft()
        if jobs:
            accounts.move_to_end(account)
        else:
            del accounts[account]
        if accounts:
            self._by_address.move_to_end(address)
        else:
            del self._by_address[address]
        self.waiting -= 1
        return job

    def drop_all(self) -> list[_Job]:
        """Empty the queue; return what waited."""
        jobs = [
            job
            for accounts in self._by_address.values()
            for waiting in accounts.values()
            for job in waiting
        ]
        self._by_address.clear()
        self.waiting = 0
        return jobs


class PasswordHasher:
    """Runs bcrypt in a small set of worker processes, so chat never waits behind it.

    Processes rather than threads: a bcrypt thread shares the interpreter
    lock with the reactor, and handing that lock back and forth while
    logins pour in delayed chat lines by tens of milliseconds. Each worker
    is a pool of one process of its own and gets one job at a time: a
    worker that dies (killed, out of memory) fails only the job it had.

    Jobs wait in a ``FairQueue`` of this object's own, fed to the workers
    round-robin over the addresses (and accounts) that asked for them; an
    address may have at most ``per_address`` jobs waiting or running.

    It also keeps a dummy hash at the configured cost: checking a password
    for an unknown user against it costs the same as a wrong password, and
    a check against a hash of a lower cost is padded to as long.
    """

    def __init__(
        self,
        reactor,
        rounds: int,
        workers: int = 2,
        on_timing: Callable[[str, float, float], None] | None = None,
        *,
        queue_limit: int | None = None,
        per_address: int | None = None,
    ) -> None:
        """``on_timing(operation, waited, took)``, if given, hears of every bcrypt job.

        ``operation`` is ``hash`` or ``check``; ``waited`` is the seconds the
        job queued for a worker, ``took`` the seconds bcrypt ran. It is
        called on the reactor thread.

        ``queue_limit``: how many jobs may wait for a worker (None: no limit).
        Past it, ``hash`` and ``check`` fail at once with ``too-many-attempts``
        rather than queue without end behind a flood of logins.
        ``per_address``: how many jobs one address may have waiting or
        running (None: no limit); past it, ``too-many-attempts`` too.
        """
        self._reactor = reactor
        self._on_timing = on_timing
        self.workers = workers
        self.queue_limit = queue_limit
        self.per_address = per_address
        self.pending = 0
        self.running = 0
        self.rounds = rounds
        self.pools: list[ProcessPoolExecutor | None] = []
        self._busy: list[int] = []
        self._queue = FairQueue()
        self._by_address: dict[str, int] = {}
        # Cluster mode: the per-address count for every node's queue together
        # (a SharedLimits, chatd/cluster/policy.py), checked after this node's.
        self.shared = None
        self._dummy_hash: str | None = None
        self._waiting_for_dummy: list[Deferred] = []
        # How long bcrypt at the current cost takes: a running average of the
        # hashes made (the dummy hash first) and the checks at that cost,
        # measured inside the workers.
        self.current_cost_seconds = 0.0

    def start(self) -> Deferred:
        """Start the workers and compute the dummy hash in one of them."""
        self.pools = [self._open_pool() for _ in range(self.workers)]
        self._busy = [0] * self.workers
        computing = self._run(hash_password, b"no such user's password", self.rounds)
        return computing.addCallback(self._keep_dummy)

    def _open_pool(self) -> ProcessPoolExecutor:
        """One worker, started now rather than in the middle of a login.

        Started with ``spawn``: a fork would copy the reactor's threads' locks.
        """
        pool = ProcessPoolExecutor(
            1,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start_worker,
            initargs=(BCRYPT_NICENESS, os.getpid()),
        )
        pool.submit(os.getpid)
        return pool

    def worker_pids(self) -> list[int]:
        """The process ids of the workers now running."""
        return [pid for pool in self.pools if pool is not None for pid in pool._processes]

    @property
    def dummy_hash(self) -> str | None:
        """The hash unknown users are checked against (at the configured cost)."""
        return self._dummy_hash

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

        Fires when they have exited and the pools' queues are released. The
        waiting happens on a thread: at most one hash long, but not the
        reactor's to spend. Waiting at all matters because twistd ends by
        re-raising SIGTERM, which skips the interpreter's exit handlers.
        """
        for job in self._queue.drop_all():
            self._release(job.address)
            job.done.errback(Failure(ChatError("server-error", "the server is stopping")))
        pools, self.pools = [pool for pool in self.pools if pool is not None], []
        if not pools:
            return succeed(None)

        def shut_down() -> None:
            for pool in pools:
                pool.shutdown(True, cancel_futures=True)

        return deferToThreadPool(self._reactor, self._reactor.getThreadPool(), shut_down)

    @property
    def queued(self) -> int:
        """How many bcrypt jobs wait for a worker."""
        return len(self._queue)

    def _run(self, function, *args) -> Deferred:
        """Run ``function(*args)`` in the least busy worker; fire with its result on the
        reactor thread.

        A worker that died breaks only its own pool: the job it had fails, and
        a new worker takes its place.
        """
        if not self.pools:
            return fail(ChatError("server-error", "the server is stopping"))
        done: Deferred = Deferred()
        index = min(range(len(self.pools)), key=self._busy.__getitem__)
        pool = self.pools[index]
        queued_at = time.monotonic()
        try:
            job = pool.submit(_timed, function, *args)
        except BrokenProcessPool:
            pool = self._replace(index, pool)
            job = pool.submit(_timed, function, *args)
        self._busy[index] += 1
        operation = "check" if function in (check_password, _padded) else "hash"
        # Hashes, and checks against hashes at the configured cost (the dummy's
        # too), tell how long bcrypt at that cost takes now.
        current_cost = function is hash_password or (
            function is check_password and hash_cost(args[1]) == self.rounds
        )
        # The pool's own thread runs this: hand the outcome to the reactor.
        job.add_done_callback(
            lambda job: self._reactor.callFromThread(
                self._job_done, job, done, operation, queued_at, index, pool, current_cost
            )
        )
        return done

    def _replace(self, index: int, broken: ProcessPoolExecutor) -> ProcessPoolExecutor:
        """A new worker in place of ``broken`` (if it was not replaced already)."""
        if self.pools and self.pools[index] is broken:
            broken.shutdown(wait=False, cancel_futures=True)
            self.pools[index] = self._open_pool()
        return self.pools[index] if self.pools else broken

    def _job_done(
        self,
        job: Future,
        done: Deferred,
        operation: str,
        queued_at: float,
        index: int,
        pool,
        current_cost: bool = False,
    ) -> None:
        if index < len(self._busy):
            self._busy[index] -= 1
        if job.cancelled():
            # The pool stopped (or was replaced) before the job ran: its waiter is told.
            done.errback(Failure(CancelledError("the password workers stopped")))
            return
        error = job.exception()
        if error is not None:
            if isinstance(error, BrokenProcessPool):
                self._replace(index, pool)
            done.errback(Failure(error))
            return
        result, started, ended = job.result()
        if current_cost:
            self._observe_current_cost(ended - started)
        if self._on_timing is not None:
            self._on_timing(operation, started - queued_at, ended - started)
        done.callback(result)

    def _bounded(self, function, *args, address: str | None = None, account=None) -> Deferred:
        """Queue a job fairly, unless the queue or the address's share of it is full."""
        if self.queue_limit is not None and (
            self.running >= self.workers and len(self._queue) >= self.queue_limit
        ):
            return fail(
                ChatError("too-many-attempts", "the server is busy checking passwords; try again")
            )
        if (
            address is not None
            and self.per_address is not None
            and self._by_address.get(address, 0) >= self.per_address
        ):
            return fail(
                ChatError(
                    "too-many-attempts",
                    "too many password checks from your address at once; try again",
                )
            )
        self.pending += 1
        if address is not None:
            self._by_address[address] = self._by_address.get(address, 0) + 1
        job = _Job(function, args, address)
        if self.shared is None or address is None:
            self._queue.push(job, account)
            self._dispatch()
            return job.done
        # The place on this node is held while the cluster's count is asked.
        admitting = self.shared.admit_bcrypt(address)

        def admitted(ticket) -> Deferred:
            if ticket is None:
                self.pending -= 1
                self._release(address)
                raise ChatError(
                    "too-many-attempts",
                    "too many password checks from your address at once; try again",
                )
            job.ticket = ticket
            self._queue.push(job, account)
            self._dispatch()
            return job.done

        return admitting.addCallback(admitted)

    def _dispatch(self) -> None:
        """Hand waiting jobs to idle workers, in the fair queue's order."""
        while self._queue and self.running < self.workers:
            job = self._queue.pop()
            self.running += 1
            running = self._run(job.function, *job.args)
            running.addBoth(self._finished, job)
            running.chainDeferred(job.done)

    def _finished(self, result, job: _Job):
        self.running -= 1
        self.pending -= 1
        self._release(job.address)
        if job.ticket is not None:
            job.ticket.end()
        self._dispatch()
        return result

    def _release(self, address: str | None) -> None:
        if address is None:
            return
        left = self._by_address.get(address, 0) - 1
        if left > 0:
            self._by_address[address] = left
        else:
            self._by_address.pop(address, None)

    def hash(self, password: bytes, address: str | None = None, account=None) -> Deferred:
        """Fire with the stored form of ``password``."""
        return self._bounded(
            hash_password, password, self.rounds, address=address, account=account
        )

    def check(
        self, password: bytes, stored: str | None, address: str | None = None, account=None
    ) -> Deferred:
        """Fire with whether ``password`` matches ``stored``; None means no account."""
        if stored is None:
            checking = self._dummy().addCallback(
                lambda dummy: self._bounded(
                    check_password, password, dummy, address=address, account=account
                )
            )
            return checking.addCallback(lambda _: False)
        cost = hash_cost(stored)
        if cost is not None and cost < self.rounds and self.current_cost_seconds > 0:
            return self._bounded(
                _padded, self.current_cost_seconds, check_password, password, stored,
                address=address, account=account,
            )
        return self._bounded(check_password, password, stored, address=address, account=account)

    def needs_rehash(self, stored: str) -> bool:
        """Whether ``stored`` is at another cost than the configured one."""
        cost = hash_cost(stored)
        return cost is not None and cost != self.rounds

    def _observe_current_cost(self, took: float) -> None:
        """bcrypt at the current cost took ``took`` seconds: keep a running average,
        what checks against lower-cost hashes are padded to."""
        if self.current_cost_seconds <= 0:
            self.current_cost_seconds = took
        else:
            self.current_cost_seconds = 0.8 * self.current_cost_seconds + 0.2 * took
