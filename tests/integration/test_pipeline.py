"""End to end on the real broker: the chain, poison messages, fan-out and fan-in."""

from __future__ import annotations

from collections import defaultdict

import orjson
import pytest

from kstream import Emit, Topology
from kstream.config import Settings
from kstream.trash import TrashCodec
from tests.apps.chain import make_chain
from tests.integration.kafkatools import consume, create_topics, jsons, produce, provision, running

pytestmark = pytest.mark.integration


def _orders(n: int, keys: int = 100) -> list[tuple[str, dict[str, object]]]:
    seq: dict[str, int] = defaultdict(int)
    out = []
    for i in range(n):
        key = f"k{i % keys}"
        seq[key] += 1
        out.append((key, {"id": i, "key": key, "seq": seq[key], "amount": float(i % 50)}))
    return out


def test_chain_of_three_delivers_each_message_once_in_key_order(settings: Settings) -> None:
    # Given a 3-node chain between two external topics, and 10,000 keyed orders
    src, dst = f"{settings.namespace}.in", f"{settings.namespace}.out"
    create_topics(settings.bootstrap_servers, src, dst)
    topology = make_chain(src, dst)
    provision(topology, settings)
    orders = _orders(10_000)
    produce(settings.bootstrap_servers, src, orders)

    # When the workers run until all arrived
    with running(topology, settings):
        out = consume(settings.bootstrap_servers, dst, count=10_000, timeout=120, settle=1.0)

    # Then every id arrives exactly once, transformed, and per key in input order
    values = jsons(out)
    ids = [v["id"] for v in values]
    assert len(ids) == 10_000 and set(ids) == set(range(10_000))
    assert all(v["parsed"] is True and v["total"] == round((v["id"] % 50) * 1.2, 2) for v in values)
    last: dict[str, int] = {}
    for m, v in zip(out, values, strict=True):
        assert m.key().decode() == v["key"], "keys carry through every node"
        assert v["seq"] == last.get(v["key"], 0) + 1, f"key {v['key']} out of order"
        last[v["key"]] = v["seq"]
    # and the headers of design.md s.3 are on the output
    headers = dict(out[0].headers())
    assert headers["kstream-origin"] == b"chain/deliver"
    assert int(headers["kstream-hops"]) == 3
    assert {"kstream-id", "kstream-workflow", "kstream-parent", "kstream-attempt"} <= headers.keys()


def test_poison_messages_go_to_trash_and_the_rest_flows(settings: Settings) -> None:
    # Given a chain and a mix of good orders, malformed JSON, a model-invalid payload and an exploding one
    src, dst = f"{settings.namespace}.in", f"{settings.namespace}.out"
    create_topics(settings.bootstrap_servers, src, dst)
    topology = make_chain(src, dst)
    provision(topology, settings)
    good = _orders(500, keys=10)
    produce(settings.bootstrap_servers, src, good)
    produce(settings.bootstrap_servers, src, [(b"bad", b"{not json"), (b"bad", b"[1, 2")], raw=True)
    produce(settings.bootstrap_servers, src, [("inv", {"id": 1000, "key": "inv", "seq": 1, "amount": "lots"})])
    produce(settings.bootstrap_servers, src, [("boom", {"id": 1001, "key": "boom", "seq": 1, "amount": 1, "explode": True})])
    produce(settings.bootstrap_servers, src, [(k, {**v, "id": v["id"] + 2000}) for k, v in good])

    # When the workers run
    with running(topology, settings):
        out = consume(settings.bootstrap_servers, dst, count=1000, timeout=90, settle=1.0)
        trash = consume(settings.bootstrap_servers, settings.trash_topic, count=4, timeout=30, settle=1.0)

    # Then the good ones arrive, the 4 bad ones are in the Trash with node and reason, and it adds up
    assert len(out) == 1000
    entries = [TrashCodec().decode(m.value()) for m in trash]
    by_reason = sorted((e.node, e.reason, e.error_type) for e in entries)
    assert by_reason == [
        ("enrich", "validation", "DecodeError"),
        ("parse", "decode", "DecodeError"),
        ("parse", "decode", "DecodeError"),
        ("parse", "error", "RuntimeError"),
    ]
    assert 1004 == len(out) + len(entries)
    boom = next(e for e in entries if e.error_type == "RuntimeError")
    assert boom.key == b"boom" and orjson.loads(boom.value)["explode"] is True  # original bytes untouched
    assert boom.topic == src and "cannot parse order 1001" in boom.error_message and "Traceback" in boom.traceback
    invalid = next(e for e in entries if e.node == "enrich")
    assert "amount" in invalid.error_message and invalid.topic == f"{settings.namespace}.chain.enrich"
    assert invalid.workflow and len(invalid.attempts) == 1


def test_fan_out_and_fan_in(settings: Settings) -> None:
    # Given split -> (double, square) -> join -> out topic
    src, dst = f"{settings.namespace}.in", f"{settings.namespace}.out"
    create_topics(settings.bootstrap_servers, src, dst)
    topology = Topology("fan")

    @topology.node("split", source=src)
    def split(n: int) -> int:
        return n

    @topology.node("double", after="split")
    def double(n: int) -> dict[str, int]:
        return {"op": "double", "n": n, "r": n * 2}

    @topology.node("square", after="split")
    def square(n: int) -> dict[str, int]:
        return {"op": "square", "n": n, "r": n * n}

    @topology.node("join", after=["double", "square"], to=dst)
    def join(v: dict[str, object]) -> list[object]:
        return [v, Emit({"op": "rekeyed", "n": v["n"]}, key=f"n{v['n']}")] if v["op"] == "double" else [v]

    provision(topology, settings)
    produce(settings.bootstrap_servers, src, [(str(i), i) for i in range(200)])

    with running(topology, settings):
        out = consume(settings.bootstrap_servers, dst, count=600, timeout=60, settle=1.0)

    values = jsons(out)
    assert len(values) == 600
    assert sorted(v["r"] for v in values if v["op"] == "double") == [2 * i for i in range(200)]
    assert sorted(v["r"] for v in values if v["op"] == "square") == [i * i for i in range(200)]
    rekeyed = {m.key() for m, v in zip(out, values, strict=True) if v["op"] == "rekeyed"}
    assert rekeyed == {f"n{i}".encode() for i in range(200)}
    assert all(m.key() == str(v["n"]).encode() for m, v in zip(out, values, strict=True) if v["op"] != "rekeyed")

