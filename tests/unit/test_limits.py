"""The token bucket's arithmetic on a fake clock, and shares following group membership."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from kstream import Topology
from kstream.app import build_worker
from kstream.config import LimitSpec, Settings, load_settings
from kstream.errors import ConfigError
from kstream.limits import BURST, LIMITS_PARTITIONS, MAX_WAIT, GlobalRateLimiter, TokenBucket, limits_topic
from kstream.provision import wanted
from kstream.testing.memory import MemoryBroker, MemoryProducer, MemoryTopicTail


def calls_between(bucket: TokenBucket, start: float, end: float) -> list[float]:
    """Times of the calls one greedy caller makes in [start, end), waiting as told."""
    now, calls = start, []
    while now < end:
        wait = bucket.take(now)
        if wait == 0:
            calls.append(now)
        else:
            now += wait
    return calls


def test_a_busy_caller_gets_exactly_the_share() -> None:
    bucket = TokenBucket(10.0, now=0.0)
    calls = calls_between(bucket, 0.0, 10.0)
    assert 99 <= len(calls) <= 100
    assert calls[0] == pytest.approx(0.1)  # starts empty: no burst on start


def test_no_share_admits_nothing_and_says_look_again_soon() -> None:
    bucket = TokenBucket(0.0, now=0.0)
    assert bucket.take(100.0) == MAX_WAIT
    assert calls_between(bucket, 0.0, 5.0) == []


def test_after_idling_the_burst_is_a_twentieth_of_a_second() -> None:
    # Given a bucket at 100/s idle for a minute
    bucket = TokenBucket(100.0, now=0.0)
    # When a caller comes back, it gets BURST seconds' worth at once, then the pace
    burst = [bucket.take(60.0) for _ in range(10)].count(0.0)
    assert burst == int(100 * BURST)
    # Then no 1-second window holds more than share * (1 + BURST)
    calls = calls_between(bucket, 60.0, 62.0)
    assert len([t for t in calls if t < 61.0]) + burst <= 100 * (1 + BURST)


def test_a_lower_share_drops_the_saved_tokens_above_its_burst() -> None:
    bucket = TokenBucket(1000.0, now=0.0)
    bucket.take(10.0)  # saved up 50 tokens
    bucket.set_share(10.0, 10.0)
    assert [bucket.take(10.0) for _ in range(3)].count(0.0) == 1  # max(1, 10 * BURST) = 1


def test_a_growing_share_counts_from_the_change() -> None:
    bucket = TokenBucket(0.0, now=0.0)
    bucket.set_share(20.0, 5.0)
    assert bucket.take(5.0) == pytest.approx(0.05)
    assert len(calls_between(bucket, 5.0, 6.0)) == 20


def test_slow_down_halves_the_rate_and_it_recovers_by_a_tenth_per_second() -> None:
    bucket = TokenBucket(100.0, now=0.0)
    bucket.slow_down(None, 10.0)
    assert bucket.rate(10.0) == pytest.approx(50.0)
    assert bucket.rate(12.0) == pytest.approx(70.0)
    assert bucket.rate(15.0) == pytest.approx(100.0)
    assert bucket.rate(30.0) == pytest.approx(100.0)
    # calls follow the ramp: the integral of 50 -> 100 over 5 s is 375
    assert len(calls_between(bucket, 10.0, 15.0)) == pytest.approx(375, abs=2)


def test_retry_after_pauses_then_the_halved_rate_keeps_recovering() -> None:
    bucket = TokenBucket(100.0, now=0.0)
    bucket.take(1.0)
    bucket.slow_down(2.0, 1.0)
    assert bucket.rate(2.0) == 0.0
    assert bucket.take(1.0) == MAX_WAIT
    assert bucket.take(2.9) == pytest.approx(0.1)
    calls = calls_between(bucket, 1.0, 4.0)
    assert calls[0] > 3.0
    assert len(calls) == pytest.approx(75, abs=2)  # the factor went 0.5 -> 0.7 during the pause, 0.7 -> 0.8 after


def test_a_flurry_of_429s_halves_once_per_second() -> None:
    bucket = TokenBucket(100.0, now=0.0)
    for i in range(10):
        bucket.slow_down(None, 1.0 + i * 0.01)
    assert bucket.rate(1.1) == pytest.approx(51.0)  # halved once at 1.0, then +10%/s
    for i in range(20):
        bucket.slow_down(None, 3.0 + i * 1.0)
    assert bucket.rate(22.0) == pytest.approx(10.0, rel=1e-3)  # settles where halving meets +10%/s


# -- membership on the in-memory broker -----------------------------------------------------


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


class Calls:
    """A thread calling through ``lim`` as fast as it admits, until stopped."""

    def __init__(self, lim: GlobalRateLimiter) -> None:
        self.count = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(lim,), daemon=True)
        self._thread.start()

    def _run(self, lim: GlobalRateLimiter) -> None:
        while not self._stop.is_set():
            lim.acquire()
            self.count += 1

    def stop(self) -> None:
        self._stop.set()


def test_shares_follow_who_has_work() -> None:
    broker = MemoryBroker()
    broker.create_topic(limits_topic("ns"), LIMITS_PARTITIONS)

    def limiter() -> GlobalRateLimiter:
        return GlobalRateLimiter("erp", LimitSpec(rate=60, per=1.0), namespace="ns",
                                 producer=lambda: MemoryProducer(broker), tail=lambda t: MemoryTopicTail(broker, t))

    a, b = limiter(), limiter()
    callers: list[Calls] = []
    try:
        a.start()
        b.start()
        wait_for(lambda: a.ready and b.ready, "both to read the claims")
        # Given work only on a: it gets the whole rate, b (idle) none
        callers.append(Calls(a))
        wait_for(lambda: a.share == 60.0, "a to get the whole rate")
        assert b.share == 0.0 and b.claim == 0.0
        # When b gets work too, they split it; the sum never exceeds the limit
        callers.append(Calls(b))
        wait_for(lambda: a.share == b.share == 30.0, "an even split")
        # When b stops calling, a gets it all back within about a second
        callers.pop().stop()
        wait_for(lambda: a.share == 60.0, "a to take b's share back", timeout=3.0)
        # When b gets work again and then leaves, a gets it all back at once
        callers.append(Calls(b))
        wait_for(lambda: b.share == 30.0, "b to get its half again")
        b.close()
        wait_for(lambda: a.share == 60.0, "a to take over")
        assert b.share == 0.0
    finally:
        for c in callers:
            c.stop()
        a.close()
        b.close()


def test_a_broken_coordination_stops_the_calls_and_keeps_retrying() -> None:
    attempts = threading.Semaphore(0)

    def failing() -> MemoryProducer:
        attempts.release()
        raise OSError("no broker")

    lim = GlobalRateLimiter("erp", LimitSpec(rate=10), namespace="ns", producer=failing,
                            tail=lambda t: MemoryTopicTail(MemoryBroker(), t))
    lim.start()
    assert attempts.acquire(timeout=5)
    assert lim.rate == 0.0
    lim.close()


# -- wiring ---------------------------------------------------------------------------------


def _limited_topology() -> Topology:
    topology = Topology("orders")

    @topology.node("call", source="orders.in", limit="erp")
    def call(value: dict[str, object]) -> None:
        return None

    return topology


def test_an_unknown_service_is_a_config_error_naming_node_and_service() -> None:
    settings = load_settings(environ={}, overrides={"namespace": "ns"})
    with pytest.raises(ConfigError, match=r"orders\.call .*limit='erp'.*limits\.erp"):
        build_worker(_limited_topology(), "call", settings, threading.Event())


def test_workers_of_a_process_share_one_limiter_per_service() -> None:
    settings = Settings.model_validate({"namespace": "ns", "limits": {"erp": {"rate": 50, "per": "1s"}}})
    topology = _limited_topology()
    limiters: dict[str, GlobalRateLimiter] = {}
    first = build_worker(topology, "call", settings, threading.Event(), limiters)
    second = build_worker(topology, "call", settings, threading.Event(), limiters)
    assert first.processor.limiter is second.processor.limiter is limiters["erp"]
    assert limiters["erp"].limit == 50.0


def test_the_limits_topic_is_wanted_only_with_a_limited_node() -> None:
    settings = load_settings(environ={}, overrides={"namespace": "ns"})
    names = {w.name: w for w in wanted(_limited_topology(), settings)}
    assert names["ns.limits"].partitions == LIMITS_PARTITIONS
    assert names["ns.limits"].config["retention.ms"] == "3600000"  # claims are read from the end
    plain = Topology("plain")
    plain.node("n", source="plain.in")(lambda v: None)
    assert "ns.limits" not in {w.name for w in wanted(plain, settings)}
