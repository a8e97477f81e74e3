"""Global rate limits: every worker that calls the same external service shares one rate.

Coordination goes through Kafka itself, no extra server (see :class:`GlobalRateLimiter` and the
claims protocol in :mod:`kstream.shares`).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from typing import Protocol

from kstream.config import LimitSpec
from kstream.errors import AccessDenied, BrokerError
from kstream.kafka.port import Producer, TopicTail
from kstream.shares import INF, ClaimBook, Timing

log = logging.getLogger("kstream.limits")

LIMITS_PARTITIONS = 60
"""Partitions of ``{ns}.limits``. The claims of one service all go to one partition (the key is
the service name: one order for all its members); more partitions spread many services."""
LIMITS_CONFIG = {"retention.ms": str(3600 * 1000), "segment.ms": str(600 * 1000)}
"""Claims matter for seconds (a member reads from the end): an hour of them is kept, in
10-minute segments so that old ones are deleted (a busy member writes 10 a second)."""
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
POLL_TIMEOUT = 0.05
"""Seconds the coordination thread blocks reading the claims: how late a heartbeat may go out."""
SATURATED = 0.1
"""A worker whose callers wait for a token, or did within this many seconds, claims all it can
get (``inf``: the limiter holds it back)..."""
USE_WINDOW = 0.5
"""...else it claims :data:`HEADROOM` times its calls per second over the last this-many seconds
(or over the time of 4 calls at the whole limit, if longer: a low limit's window holds a few
calls), 0 when it made none: it gives its share up as fast as its calls stop."""
HEADROOM = 1.25
FLUSH_TIMEOUT = 1.0
"""Seconds a claim may take to be acknowledged; a later acknowledgement is not counted."""

Clock = Callable[[], float]
TailFactory = Callable[[str], TopicTail]
"""Follows the given topic from its end (the composition root picks the Kafka adapter)."""
ProducerFactory = Callable[[], Producer]


class Limiter(Protocol):
    """Admits calls to one service at the worker's current share of the global rate.

    ``acquire`` blocks the calling thread until a call may be made (thread-safe: a prefetch-N
    sync node calls it from its pool threads); ``acquire_async`` is the same for async
    handlers and never blocks the event loop. ``slow_down`` is called when the service said
    "too many requests": the worker's rate drops (to ``retry_after`` pacing if given) and
    recovers gradually. ``start`` joins the coordination now (otherwise the first ``acquire``
    does), so that a worker whose first record arrives later calls sooner. ``close`` gives the
    share up; the others take it over at once.
    """

    def acquire(self) -> None: ...

    async def acquire_async(self) -> None: ...

    def slow_down(self, retry_after: float | None) -> None: ...

    def start(self) -> None: ...

    def close(self) -> None: ...


def limits_topic(namespace: str) -> str:
    """The topic whose partitions stand for shares of every limited service of ``namespace``."""
    return f"{namespace}.limits"


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
        # A share of 0 keeps no token: the rest of the limit may be in use elsewhere already.
        self._tokens = min(self._tokens, self._capacity(now)) if share > 0 else 0.0

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
    """:class:`Limiter` whose share follows what every worker of the service wants right now.

    Every process calling ``service`` runs one of these (shared by its workers). A daemon
    thread publishes this member's *claim* to ``{ns}.limits`` (key: the service, so all of a
    service's claims share one partition and one order) and follows that topic; the share is
    this member's fair part of the limit given the claims of the others, under the rules of
    :mod:`kstream.shares`, so the shares in use never add up to more than the limit.

    The claim is ``inf`` while callers wait for tokens (:data:`SATURATED`), else
    :data:`HEADROOM` times the calls of the last :data:`USE_WINDOW` seconds: a worker without
    work claims nothing within about 0.6 s, and the others take its share over as soon
    as they read that. A worker that gets work calls about :attr:`Timing.settle` (0.8 s)
    after its claim is acknowledged, at the share the others made room for. Busy members publish
    a heartbeat every :attr:`Timing.heartbeat`; one that stops (killed, or cut off from the
    broker) stops calling itself and is forgotten by the others after :attr:`Timing.expire`.

    ``close`` publishes a claim of 0 (the others take the share over at once); after it,
    ``acquire`` blocks forever (call it only once the callers are done).
    """

    def __init__(
        self,
        service: str,
        spec: LimitSpec,
        *,
        namespace: str,
        producer: ProducerFactory,
        tail: TailFactory,
        clock: Clock = time.monotonic,
        timing: Timing | None = None,
    ) -> None:
        self.service = service
        self.limit = spec.rate / spec.per
        self.topic = limits_topic(namespace)
        self.member = uuid.uuid4().hex[:12]
        self.timing = timing or Timing()
        self._key = service.encode()
        self._new_producer = producer
        self._new_tail = tail
        self._clock = clock
        self._cond = threading.Condition()
        self._bucket = TokenBucket(0.0, now=clock())
        self._book = ClaimBook(self.member, self.limit, self.timing)
        self._calls: deque[float] = deque()
        self._window = max(USE_WINDOW, 4 / self.limit)
        self._waited_at = -INF
        self._waiting = 0
        self._closing = threading.Event()
        self._thread: threading.Thread | None = None
        self._denied: AccessDenied | None = None

    # -- the Limiter contract ---------------------------------------------------------------

    def acquire(self) -> None:
        self.start()
        with self._cond:
            while (wait := self._take()) > 0:
                self._check()
                self._waiting += 1
                try:
                    self._cond.wait(wait)
                finally:
                    self._waiting -= 1

    async def acquire_async(self) -> None:
        self.start()
        while True:
            with self._cond:
                wait = self._take()
                if wait <= 0:
                    return
                self._check()
                self._waiting += 1  # counts as waiting (the claim stays inf) while it sleeps
            try:
                await asyncio.sleep(wait)
            finally:
                with self._cond:
                    self._waiting -= 1

    def _check(self) -> None:
        """Raise the coordination's :class:`AccessDenied`: waiting for a share would be forever."""
        if self._denied is not None:
            raise self._denied

    def slow_down(self, retry_after: float | None) -> None:
        with self._cond:
            self._bucket.slow_down(retry_after, self._clock())
        log.info("%s/%s: slowed down to %.1f calls/s (pause %.2fs)", self.topic, self.service, self.rate,
                 retry_after or 0.0)

    def start(self) -> None:
        if self._thread is not None:
            return
        with self._cond:
            if self._thread is None and not self._closing.is_set():
                self._thread = threading.Thread(target=self._coordinate, name=f"kstream-limit-{self.service}",
                                                 daemon=True)
                self._thread.start()

    def close(self) -> None:
        """Stop calling and publish a claim of 0 (the others take the share over). Idempotent."""
        self._closing.set()
        with self._cond:
            self._bucket.set_share(0.0, self._clock())
            self._cond.notify_all()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(30)

    # -- state, for tests, benchmarks and logs ------------------------------------------------

    @property
    def share(self) -> float:
        """This worker's share of the limit now, in calls per second, before any slow-down."""
        with self._cond:
            self._refresh(self._clock())
            return self._bucket.share

    @property
    def rate(self) -> float:
        """Calls per second admitted now: the share, lowered by a recent slow-down."""
        with self._cond:
            now = self._clock()
            self._refresh(now)
            return self._bucket.rate(now)

    @property
    def ready(self) -> bool:
        """The coordination runs: this member reads the claims (it has read its own back)."""
        with self._cond:
            return self._book.reading_since is not None

    @property
    def claim(self) -> float:
        """What this member wants now, in calls per second (``inf``: all it can get)."""
        with self._cond:
            return self._claim(self._clock())

    # -- under the lock ---------------------------------------------------------------------

    def _take(self) -> float:
        now = self._clock()
        self._refresh(now)
        wait = self._bucket.take(now)
        if wait > 0:
            self._waited_at = now
        else:
            self._calls.append(now)
        return wait

    def _refresh(self, now: float) -> None:
        share = 0.0 if self._closing.is_set() else self._book.share(self._claim(now), now)
        if share != self._bucket.share:
            self._bucket.set_share(share, now)

    def _claim(self, now: float) -> float:
        if self._closing.is_set():
            return 0.0
        if self._waiting or now - self._waited_at < SATURATED:
            return INF
        while self._calls and self._calls[0] <= now - self._window:
            self._calls.popleft()
        return HEADROOM * len(self._calls) / self._window

    # -- the coordination thread ------------------------------------------------------------

    def _coordinate(self) -> None:
        """Publish the claim (heartbeats while above 0) and read everyone's until ``close``."""
        producer: Producer | None = None
        tail: TopicTail | None = None
        last_error, seq, published, sent_at, logged = "", 0, 0.0, -INF, -INF
        try:
            while not self._closing.is_set():
                try:
                    if producer is None:
                        producer = self._new_producer()
                    if tail is None:
                        tail = self._new_tail(self.topic)
                    with self._cond:
                        now = self._clock()
                        claim = self._claim(now)
                        known = self._book.reading_since is not None
                    period = self.timing.heartbeat
                    if (not known and now - sent_at >= period) or self._due(claim, published, now - sent_at):
                        seq, published, sent_at = seq + 1, claim, now
                        self._publish(producer, seq, claim)
                    self._read(tail)
                    self._wake_if_share_grew()
                    if log.isEnabledFor(logging.DEBUG) and now - logged >= 1.0:
                        logged = now
                        log.debug("%s/%s %s: claim %s, share %.1f, %d others claiming", self.topic, self.service,
                                  self.member, claim, self.share, self._book.others())
                except AccessDenied as exc:
                    with self._cond:  # no retry helps: callers of acquire fail with it
                        self._denied = exc
                        self._cond.notify_all()
                    break
                except Exception as exc:  # noqa: BLE001  (logged; the share runs out until it works)
                    last_error = self._report(exc, last_error)
                    self._closing.wait(1.0)
        finally:
            if producer is not None and published > 0:
                try:
                    self._publish(producer, seq + 1, 0.0)  # the others take the share over now
                except Exception as exc:  # noqa: BLE001
                    log.warning("%s/%s: could not give the share up (it frees after %.1fs): %s", self.topic,
                                self.service, self.timing.expire, exc)
            if tail is not None:
                tail.close()

    def _wake_if_share_grew(self) -> None:
        """A claim settles (rule 2) without any record arriving: the waiting callers learn of the
        larger share now rather than after their wait (up to :data:`MAX_WAIT`)."""
        with self._cond:
            before = self._bucket.share
            self._refresh(self._clock())
            if self._bucket.share > before:
                self._cond.notify_all()

    def _due(self, claim: float, published: float, since: float) -> bool:
        """A heartbeat is due, or the claim changed from or to ``inf`` (others act on that at once)."""
        if claim <= 0 and published <= 0:
            return False
        return since >= self.timing.heartbeat or (claim == INF) != (published == INF) or (claim <= 0 < published)

    def _publish(self, producer: Producer, seq: int, claim: float) -> None:
        with self._cond:
            self._book.sent(seq, claim, self._clock())
        producer.produce(self.topic, f"{self.member} {seq} {claim!r}".encode(), self._key, None)
        left = producer.flush(FLUSH_TIMEOUT)
        errors = producer.take_errors()
        denied = [e for e in errors if e.startswith("not authorized")]
        if denied:
            raise AccessDenied(denied[0])  # the limits topic's WRITE right is missing: no retry helps
        if errors:
            raise BrokerError("publishing a claim failed: " + "; ".join(errors))
        if left == 0:
            with self._cond:
                self._book.acked(seq, self._clock())

    def _read(self, tail: TopicTail) -> None:
        records = tail.read(POLL_TIMEOUT)
        with self._cond:
            for rec in records:
                if rec.key() != self._key:
                    continue  # another service's claims on the same partition
                try:
                    member, seq, claim = (rec.value() or b"").decode().split(" ")
                    self._book.received(member, int(seq), float(claim), self._clock())
                except ValueError:
                    log.warning("%s/%s: skipped a claim that is not 'member seq claim': %r", self.topic,
                                self.service, rec.value())
            if records:
                self._cond.notify_all()  # a waiting caller may have a larger share now

    def _report(self, exc: Exception, last: str) -> str:
        text = f"{type(exc).__name__}: {exc}"
        if text != last:
            log.error("%s/%s: rate limit coordination failed (retrying; no calls meanwhile): %s", self.topic,
                      self.service, text)
        return text
