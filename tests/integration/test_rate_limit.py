"""Global rate limits on the real broker: shares through the ``{ns}.limits`` consumer group."""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from kstream import RateLimited, Topology
from kstream.app import limiter
from kstream.config import LimitSpec, Settings
from kstream.limits import LIMITS_PARTITIONS, GlobalRateLimiter, limits_topic
from tests.integration.kafkatools import create_topics, produce, provision, running, wait_until

pytestmark = pytest.mark.integration

RATE = 40.0


def max_in_window(times: list[float], width: float = 1.0) -> int:
    """The most calls in any window of ``width`` seconds (sliding: each call starts one)."""
    times = sorted(times)
    return max((bisect.bisect_left(times, t + width) - i for i, t in enumerate(times)), default=0)


def in_last(times: list[float], width: float = 1.0) -> int:
    now = time.monotonic()
    return sum(1 for t in list(times) if t > now - width)


class Caller:
    """A thread calling the service through ``lim`` as fast as it admits; records call times."""

    def __init__(self, lim: GlobalRateLimiter) -> None:
        self.lim = lim
        self.calls: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.lim.acquire()
            self.calls.append(time.monotonic())

    def between(self, start: float, end: float) -> list[float]:
        return [t for t in list(self.calls) if start <= t < end]

    def stop(self) -> None:
        self._stop.set()


@pytest.fixture()
def limited(settings: Settings) -> Settings:
    create_topics(settings.bootstrap_servers, limits_topic(settings.namespace), partitions=LIMITS_PARTITIONS)
    return settings.model_copy(update={"limits": {"erp": LimitSpec(rate=RATE, per=1.0)}})


@contextmanager
def members(settings: Settings, n: int) -> Iterator[list[GlobalRateLimiter]]:
    """``n`` limiters on service erp (as if in ``n`` processes), joined with the partitions split."""
    lims = [limiter("erp", settings) for _ in range(n)]
    try:
        for lim in lims:
            lim.start()
        wait_until(lambda: sum(lim.owned for lim in lims) == LIMITS_PARTITIONS and all(lim.owned for lim in lims),
                   timeout=20, what="every member to hold a share")
        yield lims
    finally:
        for lim in lims:
            lim.close()


def test_two_workers_together_call_at_the_limit(limited: Settings) -> None:
    # Given two members of the erp group, each called as fast as it admits
    with members(limited, 2) as lims:
        callers = [Caller(lim) for lim in lims]
        try:
            start = time.monotonic() + 0.5  # settled into the pace
            wait_until(lambda: time.monotonic() > start + 5.0, timeout=10, what="5 s of calls")
        finally:
            for c in callers:
                c.stop()
    # Then together they made the limit's worth of calls, and no second held more than 110%
    calls = [t for c in callers for t in c.between(start, start + 5.0)]
    assert 0.85 * RATE * 5 <= len(calls) <= 1.1 * RATE * 5
    assert max_in_window(calls) <= 1.1 * RATE
    assert all(len(c.between(start, start + 5.0)) > RATE for c in callers)  # each did its share (~100)


def test_when_one_leaves_the_other_takes_over_the_full_rate(limited: Settings) -> None:
    with members(limited, 2) as (stays, leaves):
        caller = Caller(stays)
        try:
            # Given the one that stays runs at half the rate
            wait_until(lambda: 0.4 * RATE <= in_last(caller.calls) <= 0.6 * RATE, timeout=5, what="half the rate")
            # When the other leaves the group
            left = time.monotonic()
            leaves.close()
            # Then within a few seconds it calls at the full rate, and never above it
            wait_until(lambda: in_last(caller.calls) >= 0.9 * RATE, timeout=5, what="the full rate")
            took = time.monotonic() - left
            wait_until(lambda: time.monotonic() > left + took + 1.0, timeout=3, what="one more second")
        finally:
            caller.stop()
    assert stays.owned == 0  # closed on the way out of the block
    assert max_in_window(caller.calls) <= 1.1 * RATE
    assert took < 4.0


def test_rate_limited_slows_the_share_down_then_it_recovers(limited: Settings) -> None:
    with members(limited, 1) as (lim,):
        caller = Caller(lim)
        try:
            wait_until(lambda: in_last(caller.calls) >= 0.9 * RATE, timeout=5, what="the full rate")
            # When the service says 429 with Retry-After 0.5 s
            hit = time.monotonic()
            lim.slow_down(0.5)
            # Then nothing is called for 0.5 s, then at about half the rate...
            wait_until(lambda: time.monotonic() > hit + 1.5, timeout=3, what="a second after the pause")
            assert caller.between(hit + 0.01, hit + 0.5) == []
            assert 0.4 * RATE <= len(caller.between(hit + 0.5, hit + 1.5)) <= 0.75 * RATE
            # ...growing back to the full rate within about 5 s
            wait_until(lambda: in_last(caller.calls) >= 0.9 * RATE, timeout=8, what="recovery")
        finally:
            caller.stop()
    assert time.monotonic() - hit > 3.0  # gradually, not at once
    assert max_in_window(caller.calls) <= 1.1 * RATE


def test_a_node_with_a_limit_is_throttled_to_the_configured_rate(limited: Settings) -> None:
    # Given a node limit="erp" at 40/s whose service answers 429 once, and 100 messages
    src = f"{limited.namespace}.in"
    create_topics(limited.bootstrap_servers, src)
    topology = Topology("svc")
    calls: list[float] = []
    seen: set[int] = set()

    @topology.node("call", source=src, limit="erp", prefetch=4, ordering="none")
    def call(value: dict[str, int]) -> None:
        calls.append(time.monotonic())
        if value["i"] == 10 and value["i"] not in seen:
            seen.add(value["i"])
            raise RateLimited(retry_after=0.2)
        seen.add(value["i"])

    provision(topology, limited)  # creates the limits topic if missing (here it exists)
    produce(limited.bootstrap_servers, src, [(str(i), {"i": i}) for i in range(100)])

    # When the node runs until it saw every message
    with running(topology, limited):
        wait_until(lambda: len(seen) == 100, timeout=30, what="every message handled")

    # Then it never called faster than the limit (the retry of the 429 included)
    assert len(calls) == 101
    assert max_in_window(calls) <= 1.1 * RATE
    assert calls[-1] - calls[0] >= 0.9 * 100 / RATE
