"""Observability against the real broker: /metrics, /healthz, /readyz of `kstream run`, the lag
metrics against `kstream lag`, tracing through Kafka, JSON logs without secrets."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from confluent_kafka import Producer
from prometheus_client.parser import text_string_to_metric_families

from kstream.app import Observer, build_worker, run_workers
from kstream.cli.main import cli
from kstream.config import Settings, load_settings
from kstream.dev.broker import LocalBroker
from kstream.metrics import HISTOGRAM_EVERY, Metrics
from kstream.tracing import OtelTracing
from tests.apps.chain import make_chain
from tests.apps.observed import make_observed
from tests.integration.kafkatools import consume, produce, provision, wait_until

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
APP = "tests/apps/observed.py:topology"
SECRET = "hunter2-s3cr3t-value"


# -- helpers ----------------------------------------------------------------------------------


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError as exc:
        return 0, str(exc)


def _scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics, parsed by prometheus-client's own parser."""
    status, text = _get(f"http://127.0.0.1:{port}/metrics")
    assert status == 200, text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def _value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return sum(v for (n, ls), v in samples.items() if n == name and labels.items() <= dict(ls).items())


@contextmanager
def _kstream_run(settings: Settings, tmp_path: Path, *args: str, config: str = "") -> Iterator[tuple[subprocess.Popen[bytes], int, Path]]:
    """``kstream run APP --http-port 0`` as a real process; yields it, its HTTP port and its stderr file."""
    cfg = tmp_path / "kstream.toml"
    cfg.write_text(config)
    err_path = tmp_path / "stderr.log"
    ns = settings.namespace
    env = {**os.environ, "OBSERVED_SRC": f"{ns}.in", "OBSERVED_DST": f"{ns}.out", "PYTHONPATH": str(ROOT)}
    with err_path.open("wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "kstream.cli.main", "--config", str(cfg), "-b",
                                 settings.bootstrap_servers, "-n", ns, *args], cwd=ROOT, env=env,
                                stdout=subprocess.DEVNULL, stderr=err)
        try:
            found: list[int] = []

            def port_known() -> bool:
                m = re.search(r"http on port (\d+)", err_path.read_text())
                if m:
                    found.append(int(m.group(1)))
                assert proc.poll() is None, err_path.read_text()
                return bool(m)

            wait_until(port_known, timeout=60, what="the worker's HTTP port")
            yield proc, found[0], err_path
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)


def _orders(n: int, *, explode: set[int], flaky: set[int]) -> list[tuple[str, dict[str, object]]]:
    return [(f"k{i % 7}", {"id": i, "amount": i, "explode": i in explode, "flaky": i in flaky}) for i in range(n)]


# -- metrics, health, lag ---------------------------------------------------------------------


def test_metrics_count_what_was_sent_trashed_and_retried_and_lag_matches_kstream_lag(
        settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given the observed chain provisioned, and 40 orders of which 4 explode and 6 are flaky
    ns = settings.namespace
    topology = make_observed(f"{ns}.in", f"{ns}.out")
    provision(topology, settings)
    explode, flaky = {3, 11, 19, 27}, {1, 5, 9, 14, 22, 33}
    sent = produce(settings.bootstrap_servers, f"{ns}.in", _orders(40, explode=explode, flaky=flaky))
    passed = sent - len(explode)
    # When kstream run serves metrics while processing them
    config = "[observe]\nprobe_interval = 0.5\n[runtime]\ncommit_interval = 0.3\n"
    with _kstream_run(settings, tmp_path, "run", APP, "--http-port", "0", config=config) as (_, port, _):
        assert len(consume(settings.bootstrap_servers, f"{ns}.out", count=passed, timeout=90)) == passed

        def settled() -> bool:
            s = _scrape(port)
            return (_value(s, "kstream_records_processed_total", node="deliver") == passed
                    and _value(s, "kstream_consumer_lag_records") == 0
                    and _value(s, "kstream_committed_offset", node="check") == sent)

        wait_until(settled, timeout=60, what="every record counted and committed in the metrics")
        samples = _scrape(port)
        # Then the counters equal the records sent, trashed and retried
        check = {"topology": "observed", "node": "check"}
        assert _value(samples, "kstream_records_processed_total", **check) == sent
        assert _value(samples, "kstream_records_trashed_total", **check) == len(explode)
        assert _value(samples, "kstream_records_retried_total", **check) == len(flaky)
        assert _value(samples, "kstream_records_out_total", **check) == passed
        for node in ("double", "deliver"):
            assert _value(samples, "kstream_records_processed_total", node=node) == passed
            assert _value(samples, "kstream_records_out_total", node=node) == passed
            assert _value(samples, "kstream_records_trashed_total", node=node) == 0
        # and the duration and age histograms observed one message in HISTOGRAM_EVERY
        sampled = -(-sent // HISTOGRAM_EVERY)
        assert _value(samples, "kstream_handler_duration_seconds_count", **check) == sampled
        assert _value(samples, "kstream_handler_duration_seconds_bucket", le="+Inf", **check) == sampled
        assert _value(samples, "kstream_record_age_seconds_count", node="deliver") == -(-passed // HISTOGRAM_EVERY)
        assert _value(samples, "kstream_broker_reachable") == 1
        assert _value(samples, "kstream_rebalances_total", event="assigned", **check) >= 1
        # and the process is live and ready
        assert _get(f"http://127.0.0.1:{port}/healthz") == (200, "ok\n")
        assert _get(f"http://127.0.0.1:{port}/readyz") == (200, "ok\n")

        # And kstream lag shows the same committed offsets and lag, partition by partition
        monkeypatch.chdir(ROOT)
        monkeypatch.setenv("OBSERVED_SRC", f"{ns}.in")
        monkeypatch.setenv("OBSERVED_DST", f"{ns}.out")
        result = CliRunner().invoke(cli, ["-b", settings.bootstrap_servers, "-n", ns, "lag", APP, "--interval", "0",
                                          "--json"], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        shown = json.loads(result.stdout)
        samples = _scrape(port)
        compared = 0
        for node in shown["nodes"]:
            for p in node["partitions"]:
                labels = {"node": node["node"], "topic": p["topic"], "partition": str(p["partition"])}
                assert _value(samples, "kstream_consumer_lag_records", **labels) == p["lag"], labels
                assert _value(samples, "kstream_committed_offset", **labels) == (p["committed"] or 0), labels
                compared += 1
        # three nodes of three partitions each, and the source= node's replay topic
        assert compared == 3 * 3 + 3
        assert sum(p["committed"] or 0 for n in shown["nodes"] for p in n["partitions"]) == sent + 2 * passed


def test_readiness_turns_false_while_the_cluster_is_unreachable_and_back(tmp_path: Path) -> None:
    # Given a broker of this test's own (it is stopped halfway) and a worker serving /readyz
    broker = LocalBroker(tmp_path / "broker")
    info, _ = broker.start()
    try:
        settings = load_settings(environ={}, overrides={
            "bootstrap_servers": info.bootstrap, "namespace": "ready", "topics": {"partitions": 1},
            "observe": {"http_port": 0, "http_host": "127.0.0.1", "probe_interval": 0.5},
            "runtime": {"liveness_timeout": 30},
        })
        topology = make_chain("ready.in", "ready.out")
        provision(topology, settings)
        stop = threading.Event()
        metrics = Metrics()
        workers = [build_worker(topology, "parse", settings, stop, metrics=metrics)]
        observer = Observer(topology, workers, settings, metrics, stop)
        runner = threading.Thread(target=run_workers, args=(workers, stop), daemon=True)
        runner.start()
        url = f"http://127.0.0.1:{observer.port}"
        try:
            wait_until(lambda: _get(f"{url}/readyz")[0] == 200, timeout=60, what="ready")
            # When the cluster goes away
            broker.stop()
            # Then the worker is not ready (but alive: its poll loop turns)
            wait_until(lambda: _get(f"{url}/readyz") == (503, "cluster unreachable\n"), timeout=60, what="not ready")
            assert _get(f"{url}/healthz") == (200, "ok\n")
            assert _value(_scrape(observer.port), "kstream_broker_reachable") == 0
            # And when it returns, ready again
            broker.start(port=int(info.bootstrap.rsplit(":", 1)[1]))
            wait_until(lambda: _get(f"{url}/readyz")[0] == 200, timeout=90, what="ready again")
            # And a stopping process is not ready
            stop.set()
            wait_until(lambda: _get(f"{url}/readyz") == (503, "shutting down\n"), timeout=10, what="shutting down")
        finally:
            stop.set()
            runner.join(60)
            observer.close()
    finally:
        broker.stop()


# -- tracing ------------------------------------------------------------------------------------


def test_a_chain_started_with_a_traceparent_gives_one_trace_of_three_spans(settings: Settings) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    # Given the 3-node chain with tracing into an in-memory exporter
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    ns = settings.namespace
    topology = make_chain(f"{ns}.in", f"{ns}.out")
    provision(topology, settings)
    stop = threading.Event()
    tracing = OtelTracing(provider)
    workers = [build_worker(topology, n, settings, stop, tracing=tracing) for n in topology.order()]
    runner = threading.Thread(target=run_workers, args=(workers, stop), daemon=True)
    runner.start()
    try:
        # When one record enters with a W3C traceparent
        trace_id, parent_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
        p = Producer({"bootstrap.servers": settings.bootstrap_servers})
        p.produce(f"{ns}.in", json.dumps({"id": 1, "key": "a", "seq": 1, "amount": 2.0}).encode(), b"a",
                  headers=[("traceparent", f"00-{trace_id}-{parent_id}-01".encode())])
        assert p.flush(30) == 0
        out = consume(settings.bootstrap_servers, f"{ns}.out", count=1, timeout=60)
        assert len(out) == 1
        wait_until(lambda: len(exporter.get_finished_spans()) >= 3, timeout=30, what="three spans")
    finally:
        stop.set()
        runner.join(60)
    # Then there is one trace of three spans, parent to child, in node order
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert sorted(spans) == ["chain/deliver", "chain/enrich", "chain/parse"]
    parse, enrich, deliver = spans["chain/parse"], spans["chain/enrich"], spans["chain/deliver"]
    assert {format(s.context.trace_id, "032x") for s in spans.values()} == {trace_id}
    assert parse.parent is not None and format(parse.parent.span_id, "016x") == parent_id
    assert enrich.parent is not None and enrich.parent.span_id == parse.context.span_id
    assert deliver.parent is not None and deliver.parent.span_id == enrich.context.span_id
    # with the node and where the record was
    assert parse.attributes["kstream.node"] == "chain/parse"
    assert parse.attributes["messaging.destination.name"] == f"{ns}.in"
    assert enrich.attributes["messaging.destination.name"] == f"{ns}.chain.enrich"
    assert {s.attributes["kstream.attempt"] for s in spans.values()} == {1}
    assert all("messaging.kafka.message.offset" in s.attributes and "messaging.destination.partition.id" in s.attributes
               for s in spans.values())
    # and the output carries the last span's context
    headers = dict(out[0].headers())
    assert headers["traceparent"] == f"00-{trace_id}-{format(deliver.context.span_id, '016x')}-01".encode()


# -- logs ---------------------------------------------------------------------------------------


def test_json_logs_name_the_record_never_its_payload_nor_a_secret(settings: Settings, tmp_path: Path) -> None:
    # Given the observed chain, and an order that explodes (a message-level warning)
    ns = settings.namespace
    provision(make_observed(f"{ns}.in", f"{ns}.out"), settings)
    marker = "PAYLOAD-MARKER-7731"
    produce(settings.bootstrap_servers, f"{ns}.in", [("k", {"id": 1, "explode": True, "note": marker})])
    # When kstream run logs JSON with a SASL password among its librdkafka properties
    args = ["-X", f"sasl.password={SECRET}", "-X", "sasl.username=someone", "-X", "debug=conf", "run", APP, "--log-format", "json",
            "--log-level", "debug", "--node", "check", "--http-port", "0"]
    with _kstream_run(settings, tmp_path, *args) as (_proc, port, err_path):
        def trashed() -> bool:
            return "to trash" in err_path.read_text()

        wait_until(trashed, timeout=60, what="the trash log line")
    text = err_path.read_text()
    # Then the password and the payload appear nowhere
    assert SECRET not in text
    assert marker not in text
    # and every log line is one JSON object with the common fields
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    # (librdkafka can write a line of its own, "%4|...", before a client's log queue is served:
    # not a kstream log line, and the secret check above covers it too)
    others = [line for line in text.splitlines() if line.strip() and not line.startswith(("{", "%"))]
    assert lines and others == ["running check of observed on " + settings.bootstrap_servers
                                + f"; http on port {port}", "stopped"], others
    for line in lines:
        assert {"time", "level", "logger", "message", "worker"} <= line.keys(), line
    trash = [line for line in lines if "to trash" in line["message"]]
    assert len(trash) == 1
    assert trash[0]["topology"] == "observed" and trash[0]["node"] == "check"
    assert trash[0]["topic"] == f"{ns}.in" and trash[0]["offset"] == 0 and trash[0]["partition"] in (0, 1, 2)
    assert trash[0]["kstream_id"] == f"{ns}.in/{trash[0]['partition']}/0"
    assert trash[0]["level"] == "WARNING"


def test_exactly_once_transactions_are_counted(settings: Settings) -> None:
    # Given the chain in exactly-once mode, counting into metrics
    ns = settings.namespace
    topology = make_chain(f"{ns}.in", f"{ns}.out", exactly_once=True)
    provision(topology, settings)
    stop = threading.Event()
    metrics = Metrics()
    workers = [build_worker(topology, n, settings, stop, metrics=metrics) for n in topology.order()]
    runner = threading.Thread(target=run_workers, args=(workers, stop), daemon=True)
    runner.start()
    try:
        # When 20 orders pass
        produce(settings.bootstrap_servers, f"{ns}.in",
                [(f"k{i}", {"id": i, "key": f"k{i}", "seq": i, "amount": 1.0}) for i in range(20)])
        assert len(consume(settings.bootstrap_servers, f"{ns}.out", count=20, timeout=90, committed=True)) == 20
    finally:
        stop.set()
        runner.join(60)
    # Then every node committed transactions and aborted none
    for node in topology.order():
        stats = metrics.node("chain", node)
        assert stats.transactions_committed >= 1, node
        assert stats.transactions_aborted == 0 and stats.commit_failures == 0, node
        assert stats.processed() == 20 and stats.records_out == 20, node


def test_a_trash_replay_is_a_new_trace_linked_to_the_original(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    # Given the traced chain and an order with a traceparent that fails validation at enrich
    monkeypatch.chdir(ROOT)
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    ns = settings.namespace
    topology = make_chain(f"{ns}.in", f"{ns}.out")
    provision(topology, settings)
    stop = threading.Event()
    workers = [build_worker(topology, n, settings, stop, tracing=OtelTracing(provider)) for n in topology.order()]
    runner = threading.Thread(target=run_workers, args=(workers, stop), daemon=True)
    runner.start()

    def cli_json(*args: str) -> dict[str, Any]:
        result = CliRunner().invoke(cli, ["-b", settings.bootstrap_servers, "-n", ns, *args],
                                    env={"CHAIN_SRC": f"{ns}.in", "CHAIN_DST": f"{ns}.out"}, catch_exceptions=False)
        assert result.exit_code == 0, result.output
        parsed: dict[str, Any] = json.loads(result.stdout) if result.stdout.startswith("{") else {"out": result.stdout}
        return parsed

    def enrich_spans() -> list[Any]:
        return [s for s in exporter.get_finished_spans() if s.name == "chain/enrich"]

    try:
        trace_id = "5bf92f3577b34da6a3ce929d0e0e4736"
        p = Producer({"bootstrap.servers": settings.bootstrap_servers})
        p.produce(f"{ns}.in", json.dumps({"id": 1, "key": "a", "seq": 1, "amount": "lots"}).encode(), b"a",
                  headers=[("traceparent", f"00-{trace_id}-00f067aa0ba902b7-01".encode())])
        assert p.flush(30) == 0
        wait_until(lambda: cli_json("trash", "list", "--json")["total"] == 1, timeout=60, what="the Trash entry")
        entry = cli_json("trash", "list", "--json")["entries"][0]
        assert len(enrich_spans()) == 1
        # When the entry is replayed (it fails again: the payload is unchanged)
        assert "replayed 1 entry" in cli_json("trash", "replay", entry["id"])["out"]
        wait_until(lambda: len(enrich_spans()) == 2, timeout=60, what="the replay's span")
    finally:
        stop.set()
        runner.join(60)
    # Then the replay's span starts a new trace, linked to the span the failed message came from
    parse = next(s for s in exporter.get_finished_spans() if s.name == "chain/parse")
    first, replay = enrich_spans()
    assert format(first.context.trace_id, "032x") == trace_id and first.parent.span_id == parse.context.span_id
    assert replay.parent is None and replay.context.trace_id != first.context.trace_id
    [link] = replay.links
    assert (link.context.trace_id, link.context.span_id) == (parse.context.trace_id, parse.context.span_id)
    assert link.attributes == {"kstream.replay_of": entry["id"]}
    # and both attempts are marked failed
    assert first.status.status_code.name == replay.status.status_code.name == "ERROR"
