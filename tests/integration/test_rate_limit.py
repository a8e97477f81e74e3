"""Global rate limits on the real broker: shares follow the claims published on ``{ns}.limits``.

Every test also checks the limit itself: no 1-second window (sliding: every call starts one)
holds more than the limit + 5 %, including while shares move between members."""

from __future__ import annotations

import bisect
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from kstream import RateLimited, Topology
from kstream.app import limiter
from kstream.config import LimitSpec, Settings
from kstream.limits import LIMITS_PARTITIONS, GlobalRateLimiter, limits_topic
from tests.integration.kafkatools import create_topics, produce, provision, running, wait_until

pytestmark = pytest.mark.integration

RATE = 100.0
OVER = 1.05 * RATE
"""The most calls any 1-second window may hold."""


def max_in_window(times: list[float], width: float = 1.0) -> int:
    """The most calls in any window of ``width`` seconds (sliding: each call starts one)."""
    times = sorted(times)
    return max((bisect.bisect_left(times, t + width) - i for i, t in enumerate(times)), default=0)


def in_last(times: list[float], width: float = 1.0) -> int:
    now = time.monotonic()
    return sum(1 for t in list(times) if t > now - width)


class Caller:
    """Threads calling the service through ``lim`` as fast as it admits; records call times."""

    def __init__(self, lim: GlobalRateLimiter, threads: int = 2) -> None:
        self.lim = lim
        self.calls: list[float] = []
        self._stop = threading.Event()
        for _ in range(threads):
            threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.lim.acquire()
            if not self._stop.is_set():
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
    """``n`` limiters on service erp (as if in ``n`` processes), each reading the claims."""
    lims = [limiter("erp", settings) for _ in range(n)]
    try:
        for lim in lims:
            lim.start()
        wait_until(lambda: all(lim.ready for lim in lims), timeout=20, what="every member to read the claims")
        yield lims
    finally:
        for lim in lims:
            lim.close()


def test_two_workers_together_call_at_the_limit(limited: Settings) -> None:
    # Given two members of the erp group, each called as fast as it admits
    with members(limited, 2) as lims:
        callers = [Caller(lim) for lim in lims]
        try:
            wait_until(lambda: all(lim.share > 0 for lim in lims), timeout=5, what="both to call")
            start = time.monotonic() + 0.5  # settled into the pace
            wait_until(lambda: time.monotonic() > start + 5.0, timeout=10, what="5 s of calls")
        finally:
            for c in callers:
                c.stop()
    # Then together they made the limit's worth of calls, and no second held more than the limit + 5%
    calls = [t for c in callers for t in c.between(start, start + 5.0)]
    assert 0.9 * RATE * 5 <= len(calls) <= OVER * 5
    assert max_in_window([t for c in callers for t in c.calls]) <= OVER
    assert all(len(c.between(start, start + 5.0)) > 2 * RATE for c in callers)  # each did its share (~250)


def test_when_one_leaves_the_other_takes_over_the_full_rate(limited: Settings) -> None:
    with members(limited, 2) as (stays, leaves):
        caller, other = Caller(stays), Caller(leaves)
        try:
            # Given the one that stays runs at half the rate (the other one is busy too)
            wait_until(lambda: 0.4 * RATE <= in_last(caller.calls) <= 0.6 * RATE, timeout=5, what="half the rate")
            # When the other leaves (close: a claim of 0)
            left = time.monotonic()
            other.stop()
            leaves.close()
            # Then within about a second it calls at the full rate, and never above it
            wait_until(lambda: in_last(caller.calls) >= 0.9 * RATE, timeout=5, what="the full rate")
            took = time.monotonic() - left
            wait_until(lambda: time.monotonic() > left + took + 1.0, timeout=3, what="one more second")
        finally:
            caller.stop()
    assert stays.share == 0.0  # closed on the way out of the block
    assert max_in_window(caller.calls) <= OVER
    assert took < 2.5


def test_shares_move_to_whoever_has_work_and_the_limit_holds(limited: Settings) -> None:
    with members(limited, 3) as (a, b, c):
        ca, cb = Caller(a), Caller(b)
        callers = [ca, cb]
        try:
            # Given a and b with work and c without: a and b together call at the limit, c not at all
            wait_until(lambda: in_last(ca.calls) + in_last(cb.calls) >= 0.95 * RATE, timeout=10,
                       what="a and b at the limit")
            assert c.share == 0.0
            # When c gets work, it calls at a third within about a second
            got_work = time.monotonic()
            cc = Caller(c)
            callers.append(cc)
            wait_until(lambda: in_last(cc.calls) >= 0.3 * RATE, timeout=5, what="c at a third")
            c_took = time.monotonic() - got_work
            # When a runs out of work, b and c take its share over within about a second
            ran_out = time.monotonic()
            ca.stop()
            wait_until(lambda: in_last(ca.calls) == 0 and in_last(cb.calls) + in_last(cc.calls) >= 0.95 * RATE,
                       timeout=5, what="b and c at the limit")
            a_took = time.monotonic() - ran_out
            # And when a has work again, the three split the limit again
            ca2 = Caller(a)
            callers.append(ca2)
            wait_until(lambda: min(in_last(ca2.calls), in_last(cb.calls), in_last(cc.calls)) >= 0.3 * RATE,
                       timeout=5, what="an even split again")
            settled = time.monotonic()
            wait_until(lambda: time.monotonic() > settled + 2.0, timeout=5, what="two more seconds")
        finally:
            for caller in callers:
                caller.stop()
    calls = sorted(t for caller in callers for t in caller.calls)
    # Then the limit held all along, and the limit was used in the steady seconds
    assert max_in_window(calls) <= OVER
    assert len([t for t in calls if settled <= t < settled + 2.0]) >= 0.95 * 2 * RATE
    assert c_took < 3.0
    assert a_took < 3.0


KILLED_MEMBER = """
import sys, time
from kstream.app import limiter
from kstream.config import LimitSpec, load_settings
settings = load_settings(environ={}, overrides={"bootstrap_servers": sys.argv[1], "namespace": sys.argv[2]})
settings = settings.model_copy(update={"limits": {"erp": LimitSpec(rate=float(sys.argv[3]), per=1.0)}})
lim = limiter("erp", settings)
with open(sys.argv[4], "w") as out:
    while True:
        lim.acquire()
        out.write(f"{time.monotonic()}\\n")
        out.flush()
"""


def test_a_killed_member_loses_its_share_within_two_seconds(limited: Settings, tmp_path: Path) -> None:
    # Given a member in another process calling as fast as it may, and one here
    log = tmp_path / "calls"
    proc = subprocess.Popen([sys.executable, "-c", KILLED_MEMBER, limited.bootstrap_servers, limited.namespace,
                             str(RATE), str(log)])
    try:
        with members(limited, 1) as (here,):
            caller = Caller(here)
            try:
                def half_each() -> bool:
                    theirs = [float(line) for line in log.read_text().split()] if log.exists() else []
                    return 0.4 * RATE <= in_last(theirs) <= 0.6 * RATE and 0.4 * RATE <= in_last(caller.calls) <= 0.6 * RATE

                wait_until(half_each, timeout=30, what="half the rate each")
                # When the other process is SIGKILLed (it cannot give its share up)
                killed = time.monotonic()
                proc.kill()
                proc.wait(10)
                # Then this member calls at the full rate within about expire (1.5 s) + a second
                wait_until(lambda: in_last(caller.calls) >= 0.95 * RATE, timeout=10, what="the full rate")
                took = time.monotonic() - killed
            finally:
                caller.stop()
    finally:
        proc.kill()
        proc.wait(10)
    # And the two processes together never called above the limit
    theirs = [float(line) for line in log.read_text().split()]
    assert len(theirs) >= 0.4 * RATE  # it called at half the rate for a second at least
    assert max_in_window(sorted(theirs + caller.calls)) <= OVER
    assert took < 3.5


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
    assert max_in_window(caller.calls) <= OVER


def test_a_node_with_a_limit_is_throttled_to_the_configured_rate(limited: Settings) -> None:
    # Given a node limit="erp" at 100/s whose service answers 429 once, and 250 messages
    src = f"{limited.namespace}.in"
    create_topics(limited.bootstrap_servers, src)
    topology = Topology("svc")
    calls: list[float] = []
    seen: set[int] = set()

    @topology.node("call", source=src, limit="erp", prefetch=4, ordering="none")
    def call(value: dict[str, int]) -> None:
        calls.append(time.monotonic())
        if value["i"] == 30 and value["i"] not in seen:
            seen.add(value["i"])
            raise RateLimited(retry_after=0.2)
        seen.add(value["i"])

    provision(topology, limited)  # creates the limits topic if missing (here it exists)
    produce(limited.bootstrap_servers, src, [(str(i), {"i": i}) for i in range(250)])

    # When the node runs until it saw every message
    with running(topology, limited):
        wait_until(lambda: len(seen) == 250, timeout=60, what="every message handled")

    # Then it never called faster than the limit (the retry of the 429 included)
    assert len(calls) == 251
    assert max_in_window(calls) <= OVER
    assert calls[-1] - calls[0] >= 0.9 * 250 / RATE
