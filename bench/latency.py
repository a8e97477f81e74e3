"""End-to-end latency of a 3-node kstream chain fed at a fixed rate.

    .venv/bin/python -m bench.latency [--rate 5000] [--seconds 20] [--variants default,tuned]

A paced producer (this process) writes ~200 B JSON records to a 6-partition input topic at
``--rate`` msgs/s; each value carries the wall-clock time of its ``produce()`` call in
microseconds (``"t_us"``). A ``kstream run`` subprocess runs three pass-through nodes
``a -> b -> c``; c writes to an output topic created with ``message.timestamp.type=LogAppendTime``,
so every output record carries the broker's time of arrival at the last topic. Latency =
that append time - ``t_us`` (1 ms resolution). A reader thread also records its receive time
(informational: it adds the reader's own fetch delay).

Each variant is a fresh set of topics and a fresh process: the default configuration first,
then tuned ones (``-X`` librdkafka overrides and ``[runtime]`` settings). Writes
``bench/results/latency.json``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer, Producer

from bench.common import (
    BenchError,
    broker,
    create_topics,
    delete_topics,
    kstream_run,
    machine,
    provision_topology,
    versions,
    write_json,
)
from bench.peers.kstream_app import build, env_for

TARGET_P99_MS = 50.0
APP = "bench/peers/kstream_app.py:topology"

# name -> (librdkafka overrides via -X, [runtime] settings)
VARIANTS: dict[str, tuple[dict[str, str], dict[str, Any]]] = {
    "default": ({}, {}),
    "poll10ms": ({}, {"poll_timeout": 0.01}),
    "fetchwait10ms": ({"fetch.wait.max.ms": "10"}, {}),
    "tuned": ({"fetch.wait.max.ms": "10", "linger.ms": "1"}, {"poll_timeout": 0.005}),
}


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    i = min(len(sorted_values) - 1, max(0, round(q / 100 * (len(sorted_values) - 1))))
    return sorted_values[i]


class Reader(threading.Thread):
    """Reads the output topic; keeps (append latency ms, receive latency ms) of measured records."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        super().__init__(name="bench-latency-reader", daemon=True)
        self.consumer = Consumer({
            "bootstrap.servers": bootstrap, "group.id": "bench-lat-" + uuid.uuid4().hex[:8], "auto.offset.reset": "earliest",
            "enable.auto.commit": False, "fetch.wait.max.ms": 5,
        })  # fmt: skip
        self.consumer.subscribe([topic])
        self.append_ms: list[float] = []
        self.receive_ms: list[float] = []
        self.warm = 0
        self.stop = threading.Event()

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                for m in self.consumer.consume(500, 0.05):
                    if m.error() is not None:
                        continue
                    now_us = time.time() * 1e6
                    v = orjson.loads(m.value())
                    if v.get("warm"):
                        self.warm += 1
                        continue
                    t_us = v["t_us"]
                    self.append_ms.append(m.timestamp()[1] - t_us / 1000)
                    self.receive_ms.append((now_us - t_us) / 1000)
        finally:
            self.consumer.close()


def paced(producer: Producer, topic: str, rate: float, seconds: float, *, warm: bool, start: int) -> int:
    """Produce ``rate`` msgs/s for ``seconds``, each stamped with its produce time; returns the count."""
    produce, poll = producer.produce, producer.poll
    t0 = time.perf_counter()
    sent = 0
    total = int(rate * seconds)
    while sent < total:
        due = min(total, int((time.perf_counter() - t0) * rate) + 1)
        while sent < due:
            i = start + sent
            value = orjson.dumps({"i": i, "user": f"user-{i % 5000:05d}", "warm": warm, "t_us": time.time_ns() // 1000,
                                  "note": "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor"})
            produce(topic, value, f"user-{i % 5000:05d}".encode())
            sent += 1
        poll(0)
        time.sleep(0.001)
    return sent


def run_variant(bootstrap: str, name: str, kafka: dict[str, str], runtime: dict[str, Any], *, rate: float, seconds: float,
                warmup_s: float, partitions: int, created: list[str]) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:6]
    source, output, ns = f"bench.lat.in.{tag}", f"bench.lat.out.{tag}", f"benchlat{tag}"
    create_topics(bootstrap, [source], partitions)
    create_topics(bootstrap, [output], partitions, {"message.timestamp.type": "LogAppendTime"})
    created += [source, output]
    created += provision_topology(build(source, output, shape="chain3"), bootstrap, ns, partitions)
    config: Path | None = None
    if runtime:
        config = Path(tempfile.mkstemp(prefix="bench-lat-", suffix=".toml")[1])
        config.write_text("[runtime]\n" + "".join(f"{k} = {v!r}\n" for k, v in runtime.items()))
    proc = kstream_run(f"latency-{name}", APP, bootstrap=bootstrap, namespace=ns, env=env_for(source, output, shape="chain3"),
                       kafka=kafka, config=config)
    stop = threading.Event()
    errors: list[BaseException] = []

    def target() -> None:
        try:
            proc(stop)
        except BaseException as exc:
            errors.append(exc)

    runner = threading.Thread(target=target, daemon=True)
    reader = Reader(bootstrap, output)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0, "acks": "all", "enable.idempotence": True})
    runner.start()
    reader.start()
    try:
        # Warm-up: paced traffic until the chain has joined its groups and caught up.
        time.sleep(1.0)
        n = paced(producer, source, rate, warmup_s, warm=True, start=0)
        # Caught up: less than 1 s of traffic between the feeder and the output.
        deadline = time.monotonic() + 60
        while reader.warm < n - rate and time.monotonic() < deadline and not errors:
            n += paced(producer, source, rate, 0.5, warm=True, start=n)
        if reader.warm < n - rate:
            raise BenchError(f"{name}: the chain did not catch up with the warm-up ({reader.warm}/{n}); {errors[:1]}")
        cpu0, t0 = proc.cpu(), time.perf_counter()
        sent = paced(producer, source, rate, seconds, warm=False, start=n)
        achieved = sent / (time.perf_counter() - t0)
        producer.flush(30)
        deadline = time.monotonic() + 30
        while len(reader.append_ms) < sent and time.monotonic() < deadline:
            time.sleep(0.05)
        cpu = proc.cpu() - cpu0
        rss = proc.peak_rss()
    finally:
        reader.stop.set()
        stop.set()
        runner.join(90)
        reader.join(10)
        if config is not None:
            config.unlink(missing_ok=True)
    if errors:
        raise BenchError(f"{name}: {errors[0]}")
    app = sorted(reader.append_ms)
    rcv = sorted(reader.receive_ms)
    result = {
        "kafka_overrides": kafka, "runtime": runtime, "sent": sent, "received": len(app), "achieved_rate": achieved,
        "append_ms": {"p50": percentile(app, 50), "p95": percentile(app, 95), "p99": percentile(app, 99), "max": app[-1] if app else None},
        "receive_ms": {"p50": percentile(rcv, 50), "p95": percentile(rcv, 95), "p99": percentile(rcv, 99), "max": rcv[-1] if rcv else None},
        "chain_cpu_s_per_s": cpu / seconds, "peak_rss_mb": None if rss is None else rss / 2**20,
    }  # fmt: skip
    a = result["append_ms"]
    print(f"  {name:<14} p50 {a['p50']:6.1f}  p95 {a['p95']:6.1f}  p99 {a['p99']:6.1f}  max {a['max']:6.1f} ms"
          f"  ({len(app):,}/{sent:,} at {achieved:,.0f}/s; receive p99 {result['receive_ms']['p99']:.1f} ms;"
          f" chain CPU {result['chain_cpu_s_per_s']:.2f} s/s)", flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.latency", description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=5000, help="input msgs/s (default 5000)")
    ap.add_argument("--seconds", type=float, default=20, help="measured seconds (default 20)")
    ap.add_argument("--warmup", type=float, default=3, help="seconds of paced warm-up traffic, not measured (default 3)")
    ap.add_argument("--partitions", type=int, default=6)
    ap.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset of " + ", ".join(VARIANTS))
    args = ap.parse_args(argv)
    names = [n.strip() for n in args.variants.split(",") if n.strip()]
    if any(n not in VARIANTS for n in names):
        ap.error(f"choose variants from {', '.join(VARIANTS)}")
    machine_before = machine()
    created: list[str] = []
    results: dict[str, Any] = {}
    with broker() as handle:
        try:
            print(f"broker {handle.bootstrap}; chain a -> b -> c, {args.rate:,.0f} msgs/s for {args.seconds:g} s; "
                  f"load {machine_before['loadavg']}", flush=True)
            for name in names:
                kafka, runtime = VARIANTS[name]
                results[name] = run_variant(handle.bootstrap, name, kafka, runtime, rate=args.rate, seconds=args.seconds,
                                            warmup_s=args.warmup, partitions=args.partitions, created=created)
            vers = versions(handle)
        except BenchError as exc:
            print(f"benchmark broke: {exc}", file=sys.stderr)
            return 1
        finally:
            if handle.pid is None:
                delete_topics(handle.bootstrap, created)
    verdicts = {n: {"p99_ms": r["append_ms"]["p99"], "target_ms": TARGET_P99_MS, "met": r["append_ms"]["p99"] <= TARGET_P99_MS}
                for n, r in results.items()}
    for n, v in verdicts.items():
        print(f"{n}: p99 {v['p99_ms']:.1f} ms (target <= {TARGET_P99_MS:g}): {'met' if v['met'] else 'NOT met'}")
    path = write_json("latency", {
        "benchmark": "latency", "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "config": {"rate": args.rate, "seconds": args.seconds, "warmup_s": args.warmup, "partitions": args.partitions,
                   "chain": "a -> b -> c, bytes pass-through, one kstream run process",
                   "feeder": "linger.ms=0, acks=all, idempotent; t_us = time of produce()",
                   "measured": "output LogAppendTime - t_us (ms); receive_ms: reader's receive time - t_us"},
        "machine_before": machine_before, "machine_after": machine(), "versions": vers,
        "variants": results, "targets": verdicts,
    })  # fmt: skip
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
