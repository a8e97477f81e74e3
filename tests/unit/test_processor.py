"""NodeProcessor: one message in, its outputs (or one trash entry) queued on the producer."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest
from pydantic import BaseModel

from kstream import Context, Emit, Permanent, Retry, Topology
from kstream import headers as hdr
from kstream.runtime.processor import Abandoned, NodeProcessor
from kstream.trash import TrashCodec, TrashEntry
from tests.unit.fakes import FakeProducer, FakeRecord, Produced

NS = "ns"
TRASH = "ns.trash"
SINK = "erp.orders"


class Order(BaseModel):
    id: int
    customer: str


def _shop(handler: Callable[..., Any], **options: Any) -> Topology:
    """parse (the handler under test) -> enrich, audit (key=customer); parse also writes erp.orders."""
    t = Topology("shop")
    t.node("parse", source="shop.raw", to=SINK, **options)(handler)
    t.node("enrich", after="parse")(lambda order: order)
    t.node("audit", after="parse", key=_by_customer)(lambda order: order)
    t.validate()
    return t


def _by_customer(order: Any) -> Any:
    """audit's key function: raises KeyError for a dict without a customer."""
    return order["customer"] if isinstance(order, dict) else None


def _processor(topology: Topology, node: str = "parse", *, hop_limit: int = 100,
               stop: threading.Event | None = None) -> tuple[NodeProcessor, FakeProducer]:
    producer = FakeProducer()
    processor = NodeProcessor(
        topology, topology.get(node), namespace=NS, producer=producer, trash_topic=TRASH,
        hop_limit=hop_limit, stop=stop or threading.Event(),
    )
    return processor, producer


def _order(**headers: bytes) -> FakeRecord:
    return FakeRecord(
        value_=b'{"id": 1, "customer": "c1"}', key_=b"k1", topic_="shop.raw", partition_=2, offset_=40,
        headers_=[(name.replace("_", "-"), value) for name, value in headers.items()] or None,
    )


def _run(processor: NodeProcessor, msg: FakeRecord) -> None:
    if processor.node.is_async:
        asyncio.run(processor.handle_async(msg))
    else:
        processor.handle(msg)


def _outputs(producer: FakeProducer) -> list[Produced]:
    return [p for p in producer.produced if p.topic != TRASH]


def _trashed(producer: FakeProducer) -> list[TrashEntry]:
    codec = TrashCodec()
    entries = []
    for p in producer.to(TRASH):
        assert p.value is not None and p.headers == []
        entry = codec.decode(p.value)
        assert p.key == entry.id.encode(), "the trash topic is keyed by entry id"
        entries.append(entry)
    return entries


def _values(produced: list[Produced]) -> list[Any]:
    return [orjson.loads(p.value or b"null") for p in produced]


def _identity(order: dict[str, Any]) -> dict[str, Any]:
    return order


async def _async_identity(order: dict[str, Any]) -> dict[str, Any]:
    return order


# -- outputs ---------------------------------------------------------------------------------


@pytest.mark.parametrize("handler", [_identity, _async_identity], ids=["sync", "async"])
def test_a_returned_value_goes_to_every_successor_with_the_input_key_and_headers(handler: Callable[..., Any]) -> None:
    # Given parse -> enrich, audit (audit re-keys by customer), parse also writes erp.orders
    processor, producer = _processor(_shop(handler))

    # When an entry message (no kstream headers, one foreign header) is processed
    msg = _order(traceparent=b"00-trace-01")
    _run(processor, msg)

    # Then one output per route, same value, input key except where a key function says otherwise
    out = _outputs(producer)
    assert {p.topic: p.key for p in out} == {"ns.shop.enrich": b"k1", "ns.shop.audit": b"c1", SINK: b"k1"}
    assert _values(out) == [{"id": 1, "customer": "c1"}] * 3
    # and each carries the kstream headers of design.md s.3
    for p in out:
        assert p.header(hdr.PARENT) == b"shop.raw/2/40"
        assert p.header(hdr.HOPS) == b"1"
        assert p.header(hdr.ATTEMPT) == b"1"
        assert p.header(hdr.ORIGIN) == b"shop/parse"
        assert p.header(hdr.TRACEPARENT) == b"00-trace-01"
    assert len({p.header(hdr.ID) for p in out}) == 3, "every output has its own id"
    assert len({p.header(hdr.WORKFLOW) for p in out}) == 1, "a run shares one workflow id"
    assert producer.to(TRASH) == []


def test_outputs_inherit_the_workflow_and_count_hops() -> None:
    processor, producer = _processor(_shop(_identity))
    _run(processor, _order(kstream_id=b"m-5", kstream_workflow=b"wf-1", kstream_hops=b"4", kstream_replay_of=b"tr-1"))
    for p in _outputs(producer):
        assert (p.header(hdr.WORKFLOW), p.header(hdr.PARENT), p.header(hdr.HOPS)) == (b"wf-1", b"m-5", b"5")
        assert p.header(hdr.REPLAY_OF) is None


@pytest.mark.parametrize("make", [lambda o: [o, o], lambda o: (x for x in (o, o))], ids=["list", "generator"])
def test_a_list_or_generator_is_several_outputs(make: Callable[[Any], Any]) -> None:
    processor, producer = _processor(_shop(lambda order: make({**order, "n": 1})))
    _run(processor, _order())
    assert len(producer.to("ns.shop.enrich")) == 2
    assert len(_outputs(producer)) == 6


def test_a_tuple_is_one_json_array() -> None:
    processor, producer = _processor(_shop(lambda order: (1, 2)))
    _run(processor, _order())
    assert _values(producer.to("ns.shop.enrich")) == [[1, 2]]


@pytest.mark.parametrize("handler", [lambda order: None, lambda order, ctx: None, lambda order: []], ids=["None", "None+ctx", "[]"])
def test_none_emits_nothing(handler: Callable[..., Any]) -> None:
    processor, producer = _processor(_shop(handler))
    _run(processor, _order())
    assert producer.produced == []


def test_emit_picks_the_key_and_the_route() -> None:
    # Given a handler that emits one routed, re-keyed output, one with no key, and one plain value
    def handler(order: dict[str, Any]) -> Iterator[Any]:
        yield Emit({"only": "enrich"}, key="k-new", to="enrich")
        yield Emit({"key": "none"}, key=None, to="audit")
        yield Emit({"route": "all"}, key=7)

    processor, producer = _processor(_shop(handler))

    # When processed
    _run(processor, _order())

    # Then to= picks one node's input, key= beats the input key and the node's key function
    got = [(p.topic, p.key, orjson.loads(p.value or b"")) for p in _outputs(producer)]
    assert got == [
        ("ns.shop.enrich", b"k-new", {"only": "enrich"}),
        ("ns.shop.audit", None, {"key": "none"}),
        ("ns.shop.enrich", b"7", {"route": "all"}),
        ("ns.shop.audit", b"7", {"route": "all"}),
        (SINK, b"7", {"route": "all"}),
    ]


def test_emit_to_a_node_uses_that_nodes_key_function() -> None:
    processor, producer = _processor(_shop(lambda order: Emit({"customer": "c9"}, to="audit")))
    _run(processor, _order())
    assert [(p.topic, p.key) for p in producer.produced] == [("ns.shop.audit", b"c9")]


def test_ctx_emit_adds_outputs_to_the_return_value() -> None:
    def handler(order: dict[str, Any], ctx: Context) -> dict[str, Any]:
        ctx.emit({"side": 1, "customer": "c2"})
        ctx.emit({"side": 2}, key="s", to="enrich")
        return {"main": True, "customer": "c3"}

    processor, producer = _processor(_shop(handler))
    _run(processor, _order())
    assert [(orjson.loads(p.value or b""), p.key) for p in producer.to("ns.shop.enrich")] == [
        ({"main": True, "customer": "c3"}, b"k1"), ({"side": 1, "customer": "c2"}, b"k1"), ({"side": 2}, b"s"),
    ]
    assert [p.key for p in producer.to("ns.shop.audit")] == [b"c3", b"c2"]
    assert len(producer.to(SINK)) == 2


def test_the_context_describes_the_message() -> None:
    seen: list[Context] = []

    def handler(order: Order, ctx: Context) -> None:
        seen.append(ctx)

    processor, _ = _processor(_shop(handler))
    _run(processor, _order(kstream_id=b"m-5", kstream_workflow=b"wf-1", x_tenant=b"acme"))
    (ctx,) = seen
    assert (ctx.key, ctx.message_id, ctx.workflow_id, ctx.attempt) == (b"k1", "m-5", "wf-1", 1)
    assert (ctx.topic, ctx.partition, ctx.offset) == ("shop.raw", 2, 40)
    assert ctx.header("x-tenant") == b"acme"
    assert ctx.log.name == "kstream.node.shop.parse"


def test_an_entry_messages_context_sees_the_workflow_id_its_outputs_carry() -> None:
    seen: list[str] = []

    def handler(order: dict[str, Any], ctx: Context) -> dict[str, Any]:
        seen.append(ctx.workflow_id)
        return order

    processor, producer = _processor(_shop(handler))
    _run(processor, _order())
    assert {p.header(hdr.WORKFLOW) for p in _outputs(producer)} == {seen[0].encode()}


# -- failures --------------------------------------------------------------------------------


def test_a_raising_handler_sends_one_trash_entry_and_nothing_else() -> None:
    # Given a generator handler that yields two outputs and then raises
    def handler(order: dict[str, Any]) -> Iterator[dict[str, Any]]:
        yield order
        yield order
        raise RuntimeError("boom at item 3")

    processor, producer = _processor(_shop(handler))
    msg = _order(kstream_id=b"m-5", kstream_workflow=b"wf-1")

    # When the message is processed
    processor.handle(msg)

    # Then only the trash entry is produced, with the untouched input and the error
    assert _outputs(producer) == []
    (entry,) = _trashed(producer)
    assert (entry.topology, entry.node, entry.reason) == ("shop", "parse", "error")
    assert (entry.error_type, entry.error_message) == ("RuntimeError", "boom at item 3")
    assert "boom at item 3" in entry.traceback
    assert (entry.key, entry.value, entry.headers) == (msg.key(), msg.value(), msg.headers())
    assert (entry.topic, entry.partition, entry.offset, entry.workflow) == ("shop.raw", 2, 40, "wf-1")
    assert len(entry.attempts) == 1
    assert processor.trashed == 1


@pytest.mark.parametrize(
    ("handler", "error_type"),
    [
        (lambda order: Emit(order, to="nowhere"), "Permanent"),
        (lambda order: {1, 2}, "TypeError"),  # not JSON-encodable
        (lambda order: [order, {"no": "customer"}], "KeyError"),  # audit's key function fails on the 2nd
    ],
    ids=["emit to unknown node", "unencodable value", "key function raises"],
)
def test_a_failure_while_planning_outputs_emits_nothing(handler: Callable[..., Any], error_type: str) -> None:
    processor, producer = _processor(_shop(handler))
    _run(processor, _order())
    assert _outputs(producer) == []
    assert [e.error_type for e in _trashed(producer)] == [error_type]


def test_an_async_handler_that_raises_goes_to_the_trash() -> None:
    async def handler(order: dict[str, Any]) -> dict[str, Any]:
        raise ValueError("async boom")

    processor, producer = _processor(_shop(handler))
    asyncio.run(processor.handle_async(_order()))
    assert _outputs(producer) == []
    assert [(e.error_type, e.error_message) for e in _trashed(producer)] == [("ValueError", "async boom")]


@pytest.mark.parametrize(
    ("value", "reason"),
    [(b"{not json", "decode"), (b'{"id": "x"}', "validation"), (None, "decode")],
    ids=["bad json", "invalid model", "null"],
)
def test_undecodable_input_is_trashed_without_calling_the_handler(value: bytes | None, reason: str) -> None:
    calls: list[Order] = []

    def handler(order: Order) -> None:
        calls.append(order)

    processor, producer = _processor(_shop(handler, retry=Retry(attempts=5, backoff=0)))
    _run(processor, FakeRecord(value_=value))
    assert calls == []
    (entry,) = _trashed(producer)
    assert (entry.reason, entry.error_type, len(entry.attempts)) == (reason, "DecodeError", 1)


def test_a_senseless_kstream_header_is_trashed() -> None:
    processor, producer = _processor(_shop(_identity))
    _run(processor, _order(kstream_hops=b"many"))
    (entry,) = _trashed(producer)
    assert entry.reason == "decode"
    assert "bad kstream header" in entry.error_message
    assert _outputs(producer) == []


def test_the_hop_limit_sends_a_message_to_the_trash() -> None:
    # Given a hop limit of 3
    calls: list[Any] = []

    def handler(order: dict[str, Any]) -> dict[str, Any]:
        calls.append(order)
        return order

    processor, producer = _processor(_shop(handler), hop_limit=3)

    # When a message that passed 2 nodes, then one that passed 3, arrive
    _run(processor, _order(kstream_hops=b"2"))
    _run(processor, _order(kstream_hops=b"3", kstream_workflow=b"wf-loop"))

    # Then the first is processed (its outputs carry hops 3) and the second trashed unprocessed
    assert len(calls) == 1
    assert {p.header(hdr.HOPS) for p in _outputs(producer)} == {b"3"}
    (entry,) = _trashed(producer)
    assert (entry.reason, entry.error_type, entry.workflow) == ("hop limit", "HopLimitExceeded", "wf-loop")


# -- retries ---------------------------------------------------------------------------------


def _flaky(fail_times: int, exc: Exception, seen: list[int]) -> Callable[..., Any]:
    def handler(order: dict[str, Any], ctx: Context) -> dict[str, Any]:
        seen.append(ctx.attempt)
        ctx.emit({"from attempt": ctx.attempt, "customer": "c1"})
        if len(seen) <= fail_times:
            raise exc
        return order

    return handler


def test_a_retry_succeeds_on_the_third_attempt() -> None:
    # Given a handler that fails twice, with 3 attempts and no backoff
    seen: list[int] = []
    processor, producer = _processor(_shop(_flaky(2, ConnectionError("erp down"), seen), retry=Retry(attempts=3, backoff=0)))

    # When processed
    _run(processor, _order())

    # Then it ran three times, and only the successful attempt's outputs were produced
    assert seen == [1, 2, 3]
    assert producer.to(TRASH) == []
    assert _values(producer.to("ns.shop.enrich")) == [{"id": 1, "customer": "c1"}, {"from attempt": 3, "customer": "c1"}]


def test_async_retries_in_place_too() -> None:
    seen: list[int] = []

    async def handler(order: dict[str, Any], ctx: Context) -> dict[str, Any]:
        seen.append(ctx.attempt)
        if len(seen) < 3:
            raise ConnectionError("erp down")
        return order

    processor, producer = _processor(_shop(handler, retry=Retry(attempts=3, backoff=0)))
    asyncio.run(processor.handle_async(_order()))
    assert seen == [1, 2, 3]
    assert len(_outputs(producer)) == 3 and producer.to(TRASH) == []


def test_exhausted_retries_trash_the_message_with_every_attempt() -> None:
    seen: list[int] = []
    processor, producer = _processor(_shop(_flaky(5, ConnectionError("erp down"), seen), retry=Retry(attempts=3, backoff=0)))
    _run(processor, _order())
    assert seen == [1, 2, 3]
    assert _outputs(producer) == []
    (entry,) = _trashed(producer)
    assert [a.error for a in entry.attempts] == ["ConnectionError: erp down"] * 3
    assert entry.first_failure <= entry.last_failure


def test_permanent_errors_skip_retries() -> None:
    seen: list[int] = []
    processor, producer = _processor(_shop(_flaky(5, Permanent("order is cancelled"), seen), retry=Retry(attempts=5, backoff=0)))
    _run(processor, _order())
    assert seen == [1]
    (entry,) = _trashed(producer)
    assert (entry.error_type, entry.error_message, len(entry.attempts)) == ("Permanent", "order is cancelled", 1)


def test_only_the_listed_exception_types_are_retried() -> None:
    seen: list[int] = []
    retry = Retry(attempts=5, backoff=0, on=(ConnectionError,))
    processor, producer = _processor(_shop(_flaky(5, ValueError("bad data"), seen), retry=retry))
    _run(processor, _order())
    assert seen == [1]
    assert len(_trashed(producer)) == 1


def test_without_retry_a_failure_is_trashed_at_once() -> None:
    seen: list[int] = []
    processor, producer = _processor(_shop(_flaky(5, ConnectionError("down"), seen)))
    _run(processor, _order())
    assert seen == [1]
    assert len(_trashed(producer)) == 1


def test_an_async_attempt_that_hangs_times_out_and_counts_as_failed() -> None:
    async def handler(order: dict[str, Any]) -> None:
        await asyncio.Event().wait()  # never set: only the timeout ends it

    processor, producer = _processor(_shop(handler, retry=Retry(attempts=2, backoff=0, timeout=0.001)))
    asyncio.run(processor.handle_async(_order()))
    (entry,) = _trashed(producer)
    assert entry.error_type == "TimeoutError"
    assert len(entry.attempts) == 2


def test_a_stopping_worker_abandons_a_message_waiting_to_retry() -> None:
    # Given the worker is stopping
    stop = threading.Event()
    stop.set()
    seen: list[int] = []
    processor, producer = _processor(_shop(_flaky(5, ConnectionError("down"), seen), retry=Retry(attempts=3, backoff=0)), stop=stop)

    # When an attempt fails, then the message is abandoned (redelivered later), not trashed
    with pytest.raises(Abandoned):
        _run(processor, _order())
    assert seen == [1]
    assert producer.produced == []


def test_the_fast_path_writes_the_same_records_as_the_general_path_for_input_with_headers() -> None:
    # Given a plain sync handler (the fast path) and the same handler with ctx (the general path)
    topology = Topology("shop")
    topology.node("fast", source="shop.raw", to=SINK)(lambda order: {**order, "seen": True})
    topology.node("general", source="shop.raw", to=SINK)(lambda order, ctx: {**order, "seen": True})
    fast, fast_out = _processor(topology, "fast")
    general, general_out = _processor(topology, "general")
    # When both take a record written by an upstream kstream node, with a foreign header too
    msg = _order(kstream_id=b"m-5", kstream_workflow=b"wf-1", kstream_parent=b"m-4", kstream_hops=b"2",
                 kstream_attempt=b"1", kstream_origin=b"shop/parse", x_tenant=b"t-9")
    fast.handle(msg)
    general.handle(msg)
    # Then they write the same value and key, and the same headers but their own id and origin
    [a], [b] = fast_out.produced, general_out.produced
    assert (a.topic, a.value, a.key) == (b.topic, b.value, b.key)

    def lineage(p: Produced) -> list[tuple[str, bytes | None]]:
        return [(k, v) for k, v in p.headers if k not in (hdr.ID, hdr.ORIGIN)]

    assert lineage(a) == lineage(b)
    assert (a.header(hdr.WORKFLOW), a.header(hdr.PARENT), a.header(hdr.HOPS), a.header("x-tenant")) == (
        b"wf-1", b"m-5", b"3", b"t-9")
    assert a.header(hdr.ID) != b.header(hdr.ID) and a.header(hdr.ORIGIN) == b"shop/fast"
