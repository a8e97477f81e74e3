"""kstream.testing: a topology run in-process on the in-memory broker, with virtual time."""

from __future__ import annotations

import time
from typing import Any

import pytest

from examples.orders import topology as orders
from kstream import Context, Page, Retry, Topology
from kstream.errors import ConfigError
from kstream.testing import TopologyDriver


def test_an_example_order_is_priced_and_delivered(kstream_driver: Any) -> None:
    # The README's example: the kstream_driver fixture comes with the package (pytest11 plugin)
    driver = kstream_driver(orders)
    driver.send("shop.orders.raw", {"order": 7, "customer": "c1", "items": [["apple", 2], ["kiwi", 1]]}, key="7")
    driver.send("shop.orders.raw", {"order": 8, "customer": "c2", "items": [["mango", 1]]}, key="8")
    driver.run()
    assert [o.json() for o in driver.outputs("erp.orders")] == [{"erp_order": "7", "customer": "c1", "amount": 1.9}]
    assert [o.key for o in driver.outputs("price")] == [b"c1", b"c2"], "price is keyed by customer"
    [entry] = driver.trash()
    assert (entry.node, entry.error_type, entry.error_message) == ("price", "Permanent", "order 8: unknown sku mango")


def test_bad_input_goes_to_the_trash_with_its_reason() -> None:
    with TopologyDriver(orders) as driver:
        driver.send("shop.orders.raw", b"{not json", key="x")
        driver.send("price", {"id": "1", "customer": "c", "lines": [{"sku": "apple", "qty": 0}]}, key="c")
        driver.run()
        reasons = {e.node: (e.reason, e.value) for e in driver.trash()}
    assert reasons["parse"] == ("decode", b"{not json")
    assert reasons["price"][0] == "validation"


def test_in_place_retries_wait_on_the_virtual_clock() -> None:
    # Given a node that fails three times before it succeeds, with a 30 s backoff
    calls: list[float] = []
    topology = Topology("flaky")

    @topology.node("call", source="in", to="out", retry=Retry(attempts=5, backoff=30, max_backoff=300, jitter=0))
    def call(value: dict[str, Any]) -> dict[str, Any]:
        calls.append(time.time())
        if len(calls) < 4:
            raise ConnectionError("service down")
        return value

    with TopologyDriver(topology) as driver:
        start = time.monotonic()
        driver.send("in", {"n": 1})
        driver.run()
        # Then it went through after 30 + 60 + 120 virtual seconds, at once in real time
        assert [o.json() for o in driver.outputs("out")] == [{"n": 1}]
        assert driver.trash() == []
        assert driver.clock.offset == 210
        assert time.monotonic() - start < 5


def test_retries_through_the_retry_topic_wait_until_the_clock_is_advanced() -> None:
    seen: list[int] = []
    topology = Topology("unordered")

    @topology.node("call", source="in", to="out", ordering="none",
                   retry=Retry(attempts=2, backoff=60, max_backoff=300, jitter=0))
    def call(value: dict[str, Any]) -> dict[str, Any]:
        seen.append(value["n"])
        if seen.count(value["n"]) == 1 and value["n"] == 1:
            raise TimeoutError("slow")
        return value

    with TopologyDriver(topology) as driver:
        driver.send("in", {"n": 1})
        driver.send("in", {"n": 2})
        driver.run()
        assert [o.json() for o in driver.outputs("out")] == [{"n": 2}], "the failed one waits; the other is not held up"
        driver.advance(30)
        assert len(driver.outputs("out")) == 1, "not due yet"
        driver.advance(31)
        assert [o.json() for o in driver.outputs("out")] == [{"n": 2}, {"n": 1}]


def test_key_parking_and_replay() -> None:
    fixed = False
    topology = Topology("parking")

    @topology.node("apply", source="in", to="out", on_failure="park_key")
    def apply(value: dict[str, Any]) -> dict[str, Any]:
        if value["n"] == 1 and not fixed:
            raise ValueError("cannot apply 1")
        return value

    with TopologyDriver(topology) as driver:
        for n in (1, 2, 3):
            driver.send("in", {"n": n}, key="k")
        driver.send("in", {"n": 4}, key="other")
        driver.run()
        # The key's later messages are parked behind the failure; other keys flow
        assert [o.json() for o in driver.outputs("out")] == [{"n": 4}]
        blocker = next(e for e in driver.trash() if e.parked_behind is None)
        assert [e.parked_behind for e in driver.trash()].count(blocker.id) == 2
        # When the cause is fixed and the entry replayed, the key flows again, in order
        fixed = True
        driver.replay(blocker.id)
        parked = [e.id for e in driver.trash()]
        driver.replay(*parked)
        assert [o.json()["n"] for o in driver.outputs("out")] == [4, 1, 2, 3]
        assert driver.trash() == []


def test_batch_pages_cursors_and_schedule() -> None:
    pages = {None: ([1, 2], "p2"), "p2": ([3], None)}
    topology = Topology("sync")

    @topology.batch("fetch", every="10m", to="out")
    def fetch(cursor: str | None, ctx: Context) -> Page:
        items, nxt = pages[cursor]
        return Page(items=items, cursor=nxt)

    with TopologyDriver(topology) as driver:
        driver.run()
        assert driver.outputs("out") == [], "no run before the schedule fires"
        driver.advance(600)
        assert [o.json() for o in driver.outputs("out")] == [1, 2, 3]
        [cursor] = driver.cursors("fetch")
        assert (cursor.scope, cursor.pages, cursor.items, cursor.completed is not None) == ("", 2, 3, True)


def test_avro_nodes_are_refused() -> None:
    from tests.apps.avro_orders import make_orders

    with pytest.raises(ConfigError, match="without a schema registry"):
        TopologyDriver(make_orders("a", "b"))
