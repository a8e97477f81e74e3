"""Where the latency of the 3-node chain goes: per-stage timestamps of every record.

The stamping chain (``kstream run bench/stages.py:topology``) is the latency benchmark's chain
``a -> b -> c`` with JSON handlers that write the wall-clock time (µs) at which each handler
starts into the value (``"h_a"``, ``"h_b"``, ``"h_c"``). Every topic of the chain (the input,
b's and c's inputs, the output) is set to ``message.timestamp.type=LogAppendTime``, so each
record carries the broker's time of arrival on each topic. After the run the four topics are
read back and joined on the record number ``"i"``:

========== ======================================================================
feed       input append - ``t_us`` (the feeder's produce call to the broker)
a.wait     ``h_a`` - input append (fetch, consume, hand-off to the handler)
a.out      b's input append - ``h_a`` (handler, produce: linger, request, append)
b.wait     ``h_b`` - b's input append
b.out      c's input append - ``h_b``
c.wait     ``h_c`` - c's input append
c.out      output append - ``h_c``
total      output append - ``t_us``
========== ======================================================================

Appends have 1 ms resolution; the stages of one record add up to its total.
Importing this module does nothing; the topology is built from ``BENCH_SOURCE`` / ``BENCH_OUTPUT``
(and ``BENCH_PROCESSING``) when ``topology`` is looked up.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource

from kstream.topology import Topology

APP = "bench/stages.py:topology"
STAGES = ("feed", "a.wait", "a.out", "b.wait", "b.out", "c.wait", "c.out", "total")


def build(source: str, output: str, *, processing: str = "at_least_once") -> Topology:
    topology = Topology("bench", processing=processing)  # type: ignore[arg-type]

    def stamp(field: str) -> Any:
        def handler(v: dict[str, Any]) -> dict[str, Any]:
            v[field] = time.time_ns() // 1000
            return v
        handler.__name__ = f"stamp_{field}"
        return handler

    topology.node("a", source=source)(stamp("h_a"))
    topology.node("b", after="a")(stamp("h_b"))
    topology.node("c", after="b", to=output)(stamp("h_c"))
    return topology


def env_for(source: str, output: str, *, processing: str = "at_least_once") -> dict[str, str]:
    return {"BENCH_SOURCE": source, "BENCH_OUTPUT": output, "BENCH_PROCESSING": processing}


def chain_topics(namespace: str, source: str, output: str) -> list[str]:
    """The four topics a record crosses, in order: input, b's input, c's input, output."""
    topology = build(source, output)
    return [source, topology.nodes["b"].input_topic(namespace), topology.nodes["c"].input_topic(namespace), output]


def log_append_time(bootstrap: str, topics: Sequence[str]) -> None:
    """Set ``message.timestamp.type=LogAppendTime`` on ``topics`` (they exist)."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    resources = [ConfigResource(ConfigResource.Type.TOPIC, t, incremental_configs=[
        ConfigEntry("message.timestamp.type", "LogAppendTime", incremental_operation=AlterConfigOpType.SET)])
        for t in topics]
    for fut in admin.incremental_alter_configs(resources).values():
        fut.result(30)


def read_appends(bootstrap: str, topic: str, count: int, timeout: float = 120.0) -> dict[int, tuple[int, dict[str, Any]]]:
    """Record number -> (append time ms, value) of the measured (non-warm-up) records of ``topic``."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-stages-" + uuid.uuid4().hex[:8],
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    c.subscribe([topic])
    out: dict[int, tuple[int, dict[str, Any]]] = {}
    deadline = time.monotonic() + timeout
    try:
        while len(out) < count and time.monotonic() < deadline:
            for m in c.consume(2000, 0.2):
                if m.error() is not None:
                    continue
                v = orjson.loads(m.value())
                if not v.get("warm"):
                    out[v["i"]] = (m.timestamp()[1], v)
    finally:
        c.close()
    return out


def breakdown(bootstrap: str, topics: Sequence[str], count: int) -> dict[str, Any]:
    """Per stage: p50/p95/p99/max in ms over every record seen on all four topics."""
    from bench.latency import percentile  # (bench.latency imports this module: late import)

    reads = [read_appends(bootstrap, t, count) for t in topics]
    common = set(reads[0]).intersection(*reads[1:])
    samples: dict[str, list[float]] = {s: [] for s in STAGES}
    for i in common:
        (app_in, v_out), app_b, app_c, app_out = reads[0][i], reads[1][i][0], reads[2][i][0], reads[3][i][0]
        v = reads[3][i][1]
        t0, ha, hb, hc = v["t_us"] / 1000, v["h_a"] / 1000, v["h_b"] / 1000, v["h_c"] / 1000
        for name, value in zip(STAGES, (app_in - t0, ha - app_in, app_b - ha, hb - app_b, app_c - hb, hc - app_c,
                                        app_out - hc, app_out - t0), strict=True):
            samples[name].append(value)
        del v_out
    result: dict[str, Any] = {"records": len(common)}
    for name, values in samples.items():
        values.sort()
        result[name] = {"p50": percentile(values, 50), "p95": percentile(values, 95), "p99": percentile(values, 99),
                        "max": values[-1] if values else None}
    return result


def describe(result: Mapping[str, Any]) -> str:
    return "  ".join(f"{s} {result[s]['p50']:.1f}/{result[s]['p99']:.1f}" for s in STAGES if s in result)


def from_env(env: Mapping[str, str] = os.environ) -> Topology:
    return build(env["BENCH_SOURCE"], env["BENCH_OUTPUT"], processing=env.get("BENCH_PROCESSING", "at_least_once"))


def __getattr__(name: str) -> Any:
    if name == "topology":
        return from_env()
    raise AttributeError(name)
