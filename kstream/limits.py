"""Global rate limits: every worker that calls the same external service shares one rate.

Coordination goes through Kafka itself, no extra server (see :class:`GlobalRateLimiter`).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol

from kstream.config import LimitSpec
from kstream.errors import AccessDenied
from kstream.kafka.port import Consumer, TopicPartition

log = logging.getLogger("kstream.limits")

LIMITS_PARTITIONS = 60
"""Partitions of ``{ns}.limits``: a share moves in steps of 1/60 of the rate, and 60 splits
evenly among 1-6, 10, 12, 15, 20, 30 or 60 workers."""
BURST = 0.05
"""Seconds of its rate a bucket may save up (at least one call). Kept small so that the calls
of all workers in any one second stay within a few percent of the limit, even after idling."""
BACKOFF = 0.5
"""``slow_down`` multiplies the current rate by this (at most once per :data:`BACKOFF_EVERY`)..."""
BACKOFF_EVERY = 1.0
"""...so a burst of "too many requests" answers to calls already in flight halves it once..."""
RECOVERY = 0.1
"""...then the rate grows back by this fraction of the share per second. (A 429 every second
settles the rate at 10% of the share: halving once a second against +10%/s.)"""
MAX_WAIT = 0.25
"""A waiting ``acquire`` looks again at least this often (the share may have grown)."""
POLL_TIMEOUT = 0.1
"""Seconds the membership thread blocks in ``consume``: how fast ``close`` starts leaving."""

Clock = Callable[[], float]
ConsumerFactory = Callable[[str], Consumer]
"""Makes a consumer in the given group (the composition root picks the Kafka adapter)."""


class Limiter(Protocol):
    """Admits calls to one service at the worker's current share of the global rate.

    ``acquire`` blocks the calling thread until a call may be made (thread-safe: a prefetch-N
    sync node calls it from its pool threads); ``acquire_async`` is the same for async
    handlers and never blocks the event loop. ``slow_down`` is called when the service said
    "too many requests": the worker's rate drops (to ``retry_after`` pacing if given) and
    recovers gradually. ``close`` leaves the coordination group; the others take over the
    share within a rebalance.
    """

    def acquire(self) -> None: ...

    async def acquire_async(self) -> None: ...

    def slow_down(self, retry_after: float | None) -> None: ...

    def close(self) -> None: ...


def limits_topic(namespace: str) -> str:
    """The topic whose partitions stand for shares of every limited service of ``namespace``."""
    return f"{namespace}.limits"


def limits_group(namespace: str, service: str) -> str:
    """The consumer group of the workers calling ``service``: one group per service."""
    return f"{namespace}.limits.{service}"


class TokenBucket:
    """The local pacing of one worker: ``share`` calls per second, scaled by a backoff factor.

    Not thread-safe (:class:`GlobalRateLimiter` holds a lock around it). Time comes from the
    ``now`` arguments, so the arithmetic is tested without a clock. Tokens accrue at the rate
    of the moment (the backoff factor grows linearly back to 1, integrated exactly) and are
    capped at :data:`BURST` seconds' worth. A share of 0 admits nothing.
    """

    def __init__(self, share: float = 0.0, *, now: float = 0.0) -> None:
        self.share = share
        self._tokens = 0.0
        self._last = now
        self._factor_at = now  # the factor is _factor0 at _factor_at, growing by RECOVERY/s
        self._factor0 = 1.0
        self._paused_until = now
        self._last_backoff = -float("inf")

    def factor(self, now: float) -> float:
        return min(1.0, self._factor0 + RECOVERY * max(0.0, now - self._factor_at))

    def rate(self, now: float) -> float:
        """Calls per second admitted at ``now``: the share times the backoff factor."""
        return 0.0 if now < self._paused_until else self.share * self.factor(now)

    def set_share(self, share: float, now: float) -> None:
        self._refill(now)
        self.share = share
        self._tokens = min(self._tokens, self._capacity(now))

    def take(self, now: float) -> float:
        """Take a token: 0.0 when taken, else the seconds until one may be (capped at :data:`MAX_WAIT`)."""
        self._refill(now)
        if self._tokens >= 1.0 - 1e-9:  # waited (1 - tokens) / rate: float rounding may leave 0.99999..
            self._tokens = max(0.0, self._tokens - 1.0)
            return 0.0
        if now < self._paused_until:
            return min(MAX_WAIT, self._paused_until - now)
        rate = self.rate(now)
        return MAX_WAIT if rate <= 0 else min(MAX_WAIT, (1.0 - self._tokens) / rate)

    def slow_down(self, retry_after: float | None, now: float) -> None:
        """Halve the rate (once per :data:`BACKOFF_EVERY`), drop saved tokens, pause ``retry_after`` s."""
        self._refill(now)
        self._tokens = 0.0
        if now - self._last_backoff >= BACKOFF_EVERY:
            self._factor0, self._factor_at = self.factor(now) * BACKOFF, now
            self._last_backoff = now
        if retry_after:
            self._paused_until = max(self._paused_until, now + retry_after)

    def _capacity(self, now: float) -> float:
        return max(1.0, self.rate(now) * BURST)

    def _refill(self, now: float) -> None:
        start = max(self._last, self._paused_until)
        if now > start:
            self._tokens = min(self._capacity(now), self._tokens + self.share * self._factor_integral(start, now))
        self._last = max(self._last, now)

    def _factor_integral(self, a: float, b: float) -> float:
        """The integral of the factor over [a, b]: linear up to where it reaches 1, then 1."""
        full = self._factor_at + (1.0 - self._factor0) / RECOVERY  # when the factor is back at 1
        ramp_end = min(b, max(a, full))
        ramped = (ramp_end - a) * (self.factor(a) + self.factor(ramp_end)) / 2
        return ramped + (b - ramp_end)


class GlobalRateLimiter:
    """:class:`Limiter` whose share is set by Kafka group membership.

    Every process calling ``service`` runs one of these (shared by its workers). Each joins the
    consumer group ``{ns}.limits.{service}`` on the topic ``{ns}.limits`` (:data:`LIMITS_PARTITIONS`
    partitions; nothing is ever produced to it) and may call at ``rate * owned / partitions``.
    The partitions of a group are a partition of the topic, so the shares add up to at most the
    limit; the broker moves partitions when workers join or leave, and the shares follow.

    A share only grows on assignment and shrinks on revocation, in the rebalance callbacks:
    a partition is revoked (and the share here lowered) before the broker hands it to another
    member, so the sum never exceeds the limit during a rebalance. Until its first assignment
    (about a heartbeat after joining) a worker makes no calls. A killed worker's share is lost
    until the broker's session timeout expires; the others are then below the limit, not above.

    The group is joined by a daemon thread on the first ``acquire`` (or ``start``), so a process
    that never calls the service takes no share. ``close`` leaves the group; after it, ``acquire``
    blocks forever (call it only once the callers are done).
    """

    def __init__(
        self,
        service: str,
        spec: LimitSpec,
        *,
        namespace: str,
        consumer: ConsumerFactory,
        partitions: int = LIMITS_PARTITIONS,
        clock: Clock = time.monotonic,
    ) -> None:
        self.service = service
        self.limit = spec.rate / spec.per
        self.topic = limits_topic(namespace)
        self.group = limits_group(namespace, service)
        self.partitions = partitions
        self._new_consumer = consumer
        self._clock = clock
        self._cond = threading.Condition()
        self._bucket = TokenBucket(0.0, now=clock())
        self._owned: set[int] = set()
        self._closing = threading.Event()
        self._thread: threading.Thread | None = None
        self._denied: AccessDenied | None = None

    # -- the Limiter contract ---------------------------------------------------------------

    def acquire(self) -> None:
        self.start()
        with self._cond:
            while (wait := self._bucket.take(self._clock())) > 0:
                self._check()
                self._cond.wait(wait)

    def _check(self) -> None:
        """Raise the coordination's :class:`AccessDenied`: waiting for a share would be forever."""
        if self._denied is not None:
            raise self._denied

    async def acquire_async(self) -> None:
        self.start()
        while True:
            with self._cond:
                wait = self._bucket.take(self._clock())
                self._check()
            if wait <= 0:
                return
            await asyncio.sleep(wait)

    def slow_down(self, retry_after: float | None) -> None:
        with self._cond:
            self._bucket.slow_down(retry_after, self._clock())
        log.info("%s: slowed down to %.1f calls/s (pause %.2fs)", self.group, self.rate, retry_after or 0.0)

    def close(self) -> None:
        """Leave the group (the others take the share over within a rebalance). Idempotent."""
        self._closing.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(30)

    # -- state, for tests, benchmarks and logs ------------------------------------------------

    def start(self) -> None:
        """Join the group now rather than on the first ``acquire``."""
        if self._thread is not None:
            return
        with self._cond:
            if self._thread is None and not self._closing.is_set():
                self._thread = threading.Thread(target=self._membership, name=f"kstream-limit-{self.service}", daemon=True)
                self._thread.start()

    @property
    def owned(self) -> int:
        """Partitions of ``{ns}.limits`` this worker holds in the service's group."""
        with self._cond:
            return len(self._owned)

    @property
    def share(self) -> float:
        """This worker's share of the limit, in calls per second, before any slow-down."""
        with self._cond:
            return self._bucket.share

    @property
    def rate(self) -> float:
        """Calls per second admitted now: the share, lowered by a recent slow-down."""
        with self._cond:
            return self._bucket.rate(self._clock())

    # -- the membership thread -------------------------------------------------------------

    def _membership(self) -> None:
        """Stay in the group until ``close``: poll (nothing arrives; rebalances run in here)."""
        consumer: Consumer | None = None
        last_error = ""
        try:
            while consumer is None and not self._closing.is_set():
                try:
                    consumer = self._new_consumer(self.group)
                    consumer.subscribe([self.topic], self._assigned, self._revoked)
                except Exception as exc:  # noqa: BLE001  (logged; the share stays 0 until it works)
                    consumer = None
                    last_error = self._report(exc, last_error)
                    self._closing.wait(1.0)
            while not self._closing.is_set():
                assert consumer is not None
                try:
                    consumer.consume(1, POLL_TIMEOUT)
                except AccessDenied as exc:
                    with self._cond:  # no retry helps: callers of acquire fail with it
                        self._denied = exc
                        self._cond.notify_all()
                    break
                except Exception as exc:  # noqa: BLE001  (e.g. the topic is missing: retried)
                    last_error = self._report(exc, last_error)
                    self._closing.wait(1.0)
        finally:
            if consumer is not None:
                try:
                    consumer.close()  # runs _revoked: the share drops before the others get it
                except Exception as exc:  # noqa: BLE001
                    log.warning("%s: leaving the group failed: %s", self.group, exc)
            self._set_owned(set())

    def _report(self, exc: Exception, last: str) -> str:
        text = f"{type(exc).__name__}: {exc}"
        if text != last:
            log.error("%s: rate limit coordination failed (retrying; no calls meanwhile): %s", self.group, text)
        return text

    def _assigned(self, partitions: list[TopicPartition]) -> None:
        self._set_owned(self._owned | {tp.partition for tp in partitions if tp.topic == self.topic})

    def _revoked(self, partitions: list[TopicPartition]) -> None:
        self._set_owned(self._owned - {tp.partition for tp in partitions if tp.topic == self.topic})

    def _set_owned(self, owned: set[int]) -> None:
        if any(p >= self.partitions for p in owned):
            log.warning("%s: %s has more than the %d partitions expected; shares are off", self.group,
                        self.topic, self.partitions)
        with self._cond:
            changed = owned != self._owned
            self._owned = owned
            self._bucket.set_share(self.limit * min(len(owned), self.partitions) / self.partitions, self._clock())
            self._cond.notify_all()
        if changed:
            log.info("%s: %d/%d partitions, share %.2f calls/s", self.group, len(owned), self.partitions,
                     self.limit * len(owned) / self.partitions)
