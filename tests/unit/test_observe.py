"""Observability pieces without a broker: the metric catalogue, the dashboard, redaction, JSON
lines, health logic, tracing of a replay, and no OpenTelemetry import without the extra."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from kstream import Permanent, Retry, Topology
from kstream.errors import RateLimited
from kstream.logs import REDACTED, JsonFormatter, redact
from kstream.metrics import AGE_BUCKETS, METRIC_NAMES, Metrics, partition_lag
from kstream.runtime.health import Health
from kstream.runtime.processor import NodeProcessor
from kstream.runtime.worker import State
from kstream.testing.memory import MemoryRecord
from kstream.tracing import OtelTracing
from tests.unit.fakes import FakeProducer, FakeRecord

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "helm/kstream/dashboards/kstream.json"


def _families(metrics: Metrics) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(metrics.render().decode())}


def _exported_name(family: Any) -> str:
    return f"{family.name}_total" if family.type == "counter" else family.name


def test_every_catalogued_metric_is_exported_and_nothing_else() -> None:
    # Given metrics with a node, a lag reading, a hanging transaction and a probe result
    metrics = Metrics()
    metrics.node("orders", "parse")
    metrics.set_lag("orders", "parse", {("ns.orders.parse", 0): (5, 9)})
    metrics.set_hanging("ns.orders.parse", 0, 7)
    metrics.set_reachable(True)
    # Then a scrape shows exactly the catalogue
    assert {_exported_name(f) for f in _families(metrics).values()} == METRIC_NAMES


def test_node_stats_count_histograms_and_lag() -> None:
    metrics = Metrics()
    stats = metrics.node("orders", "parse")
    assert metrics.node("orders", "parse") is stats
    rec = SimpleNamespace(timestamp=lambda: (1, 1_000_000))  # created at epoch 1000 s
    # When two messages finish, 2 s and 20 s after their record's timestamp
    stats.done(rec, 1002.0)  # type: ignore[arg-type]
    stats.done(rec, 1020.0)  # type: ignore[arg-type]
    stats.trashed += 1
    stats.in_flight = lambda: 4
    stats.processed = lambda: 2
    metrics.set_lag("orders", "parse", {("t", 0): (5, 9), ("t", 1): (None, 3)})
    families = _families(metrics)
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families.values() for s in f.samples}
    node = (("node", "parse"), ("topology", "orders"))
    assert samples[("kstream_records_processed_total", node)] == 2
    assert samples[("kstream_records_trashed_total", node)] == 1
    assert samples[("kstream_in_flight_records", node)] == 4
    assert samples[("kstream_record_age_seconds_count", node)] == 2
    assert samples[("kstream_record_age_seconds_sum", node)] == 22.0
    assert samples[("kstream_record_age_seconds_bucket", (("le", "2.5"), *node))] == 1
    assert samples[("kstream_record_age_seconds_bucket", (("le", "30.0"), *node))] == 2
    assert len([k for k in samples if k[0] == "kstream_record_age_seconds_bucket"]) == len(AGE_BUCKETS) + 1
    # and the lag per partition is end - committed, from 0 when never committed
    lag = {dict(k[1])["partition"]: v for k, v in samples.items() if k[0] == "kstream_consumer_lag_records"}
    assert lag == {"0": 4, "1": 3}
    assert [dict(k[1])["partition"] for k in samples if k[0] == "kstream_committed_offset"] == ["0"]
    assert partition_lag(None, 3) == 3 and partition_lag(10, 3) == 0


def test_hanging_transactions_are_set_kept_and_cleared() -> None:
    metrics = Metrics()
    metrics.set_hanging("t", 2, 41, now=100.0)
    metrics.set_hanging("t", 2, 41, now=150.0)  # still stuck at the same offset: since stays 100
    [offset] = _families(metrics)["kstream_hanging_transaction_offset"].samples
    [stuck] = _families(metrics)["kstream_hanging_transaction_seconds"].samples
    assert offset.labels == {"topic": "t", "partition": "2"} and offset.value == 41
    assert stuck.value > 1000  # since epoch 100 s
    metrics.set_hanging("t", 2, None)
    assert _families(metrics)["kstream_hanging_transaction_offset"].samples == []
    # and a worker reaches the same setter through its node's stats
    metrics.node("o", "n").set_hanging("t", 0, 9)
    [offset] = _families(metrics)["kstream_hanging_transaction_offset"].samples
    assert offset.labels == {"topic": "t", "partition": "0"} and offset.value == 9


def test_every_dashboard_query_names_a_metric_kstream_exports() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    queries = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    queries += [v["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    named = set()
    for q in queries:
        found = re.findall(r"\b(kstream_[a-z_]+)", q)
        assert found, q
        named |= {re.sub(r"_(bucket|sum|count)$", "", n) if "_seconds_" in n else n for n in found}
    assert named <= METRIC_NAMES, named - METRIC_NAMES
    # and the panels an operator wants first are there
    titles = " | ".join(p["title"] for p in dashboard["panels"])
    for wanted in ("in / out", "lag", "Trash rate", "duration p99", "age p99"):
        assert wanted in titles, titles


def test_redaction_and_json_lines() -> None:
    assert redact("-X sasl.password=hunter2 -X ssl.key.password: pw2") == \
        f"-X sasl.password={REDACTED} -X ssl.key.password: {REDACTED}"
    assert redact('{"sasl.oauthbearer.client.secret": "abc", "bootstrap.servers": "h:9092"}') == \
        f'{{"sasl.oauthbearer.client.secret": "{REDACTED}", "bootstrap.servers": "h:9092"}}'
    # A log call that quotes a config holding a secret: the JSON line keeps the name only
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter(worker="w1"))
    logger = logging.getLogger("kstream.test-observe")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("client config %s", {"sasl.password": "hunter2", "acks": "all"},
                       extra={"topology": "o", "node": "n", "topic": "t", "partition": 1, "offset": 5, "kstream_id": "x"})
    finally:
        logger.removeHandler(handler)
    line = json.loads(stream.getvalue())
    assert "hunter2" not in stream.getvalue()
    assert line["message"] == f"client config {{'sasl.password': '{REDACTED}', 'acks': 'all'}}"
    assert {k: line[k] for k in ("level", "logger", "worker", "topology", "node", "topic", "partition", "offset",
                                 "kstream_id")} == {
        "level": "WARNING", "logger": "kstream.test-observe", "worker": "w1", "topology": "o", "node": "n",
        "topic": "t", "partition": 1, "offset": 5, "kstream_id": "x"}


def test_liveness_and_readiness() -> None:
    now = [100.0]
    worker = SimpleNamespace(name="o/n", state=State.RUNNING, last_turn=99.0)
    watch = SimpleNamespace(reachable=True)
    stop = threading.Event()
    health = Health([worker], stop, watch, liveness_timeout=30, clock=lambda: now[0])  # type: ignore[list-item,arg-type]
    assert health.live() == (True, "ok") and health.ready() == (True, "ok")
    watch.reachable = False
    assert health.ready() == (False, "cluster unreachable") and health.live()[0]
    watch.reachable = True
    now[0] = 140.0  # the poll loop has not turned for 41 s
    assert health.live() == (False, "o/n: poll loop stuck for 41 s")
    stop.set()
    assert health.ready() == (False, "shutting down")


def test_a_replay_starts_a_new_trace_linked_to_the_original() -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing = OtelTracing(provider)
    trace_id, span_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    rec = MemoryRecord("t", 0, 1, b"k", b"{}", headers=[("traceparent", f"00-{trace_id}-{span_id}-01".encode())])
    with tracing.span("o/n", rec, 2, b"entry-1") as traceparent:
        pass
    [span] = exporter.get_finished_spans()
    assert span.parent is None and format(span.context.trace_id, "032x") != trace_id
    assert [format(link.context.trace_id, "032x") for link in span.links] == [trace_id]
    assert span.links[0].attributes == {"kstream.replay_of": "entry-1"}
    assert span.attributes["kstream.attempt"] == 2
    assert traceparent is not None
    assert traceparent.startswith(f"00-{format(span.context.trace_id, '032x')}-{format(span.context.span_id, '016x')}-".encode())


def test_without_opentelemetry_nothing_is_imported_and_messages_flow() -> None:
    # Given a Python where opentelemetry cannot be imported (the extra is not installed)
    code = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "opentelemetry":
            raise ImportError("no opentelemetry here")
sys.meta_path.insert(0, Block())
import threading
from kstream.app import tracing_of
from kstream.config import load_settings
from kstream.testing.memory import MemoryBroker, MemoryProducer
from kstream.runtime.processor import NodeProcessor
from kstream.topology import Topology
import kstream.cli.main
settings = load_settings(environ={})
assert settings.observe.tracing == "auto"
assert tracing_of(settings) is None
broker = MemoryBroker()
broker.create_topic("in", 1)
broker.create_topic("out", 1)
topology = Topology("t")
@topology.node("n", source="in", to="out")
def n(v: dict) -> dict:
    return v
producer = MemoryProducer(broker)
processor = NodeProcessor(topology, topology.get("n"), namespace="ns", producer=producer, trash_topic="trash",
                          hop_limit=10, stop=threading.Event(), tracing=tracing_of(settings))
producer.produce("in", b'{"a": 1}', b"k", [("traceparent", b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")])
assert processor.handle(broker.records("in")[0]) is False
[out] = broker.records("out")
assert dict(out.headers())["traceparent"] == b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
assert not [m for m in sys.modules if m.startswith("opentelemetry")]
print("ok")
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    # Then tracing is off, the message flows with its traceparent passed on, nothing was imported
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


class _SlowLimiter:
    """A rate limiter whose every acquire waits 5 ms."""

    def __init__(self) -> None:
        self.slowed: list[float | None] = []

    def acquire(self) -> None:
        time.sleep(0.005)

    async def acquire_async(self) -> None:
        await asyncio.sleep(0.005)

    def slow_down(self, retry_after: float | None) -> None:
        self.slowed.append(retry_after)

    def close(self) -> None:
        return None


def test_the_processor_counts_each_outcome() -> None:
    # Given a node that is rate limited once, fails once then passes, or fails for good
    calls: dict[int, int] = {}

    def handler(order: dict[str, Any]) -> dict[str, Any]:
        n = calls[order["id"]] = calls.get(order["id"], 0) + 1
        if order["id"] == 1 and n == 1:
            raise RateLimited("429", retry_after=0.001)
        if order["id"] == 2 and n == 1:
            raise RuntimeError("hiccup")
        if order["id"] == 3:
            raise Permanent("broken")
        return order

    topology = Topology("shop")
    topology.node("parse", source="shop.raw", to="erp.orders", retry=Retry(attempts=3, backoff=0.001))(handler)
    topology.node("enrich", after="parse")(lambda order: order)
    metrics = Metrics()
    stats = metrics.node("shop", "parse")
    producer = FakeProducer()
    limiter = _SlowLimiter()
    processor = NodeProcessor(topology, topology.get("parse"), namespace="ns", producer=producer, trash_topic="ns.trash",
                              hop_limit=100, stop=threading.Event(), limiter=limiter, stats=stats)
    # When four messages pass, one of them a replay from the Trash
    for i in range(4):
        headers = [("kstream-replay-of", b"entry-9")] if i == 0 else None
        trashed = processor.handle(FakeRecord(value_=json.dumps({"id": i}).encode(), offset_=i, headers_=headers))
        assert trashed is (i == 3)
    # Then each outcome is counted once
    assert (stats.seen, stats.records_out, stats.trashed, stats.retried, stats.rate_limited, stats.replayed) == \
        (4, 3 * 2, 1, 1, 1, 1)
    assert limiter.slowed == [0.001]
    assert stats.limit_waits == 6 and stats.limit_wait_seconds >= 6 * 0.005  # one per attempt
    # and the histograms sampled the first message of every HISTOGRAM_EVERY
    assert sum(stats.duration_buckets) == 1 and sum(stats.age_buckets) == 1
