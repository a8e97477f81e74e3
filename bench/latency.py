"""End-to-end latency of a 3-node kstream chain fed at a fixed rate.

    .venv/bin/python -m bench.latency [--rate 5000] [--seconds 60] [--variants raw,raw-envelope,default,stages,eos,eos-interval]

A paced producer (this process) writes ~200 B JSON records to a 6-partition input topic at
``--rate`` msgs/s; each value carries the wall-clock time of its ``produce()`` call in
microseconds (``"t_us"``). A ``kstream run`` subprocess runs three pass-through nodes
``a -> b -> c``; c writes to an output topic created with ``message.timestamp.type=LogAppendTime``,
so every output record carries the broker's time of arrival at the last topic. Latency =
that append time - ``t_us`` (1 ms resolution). A reader thread also records its receive time
(informational: it adds the reader's own fetch delay).

Each variant is a fresh set of topics and a fresh process: the default configuration first,
then others (``-X`` librdkafka overrides and ``[runtime]`` settings). ``stages`` runs the
stamping chain of :mod:`bench.stages` (JSON handlers that stamp their start time; every topic
with LogAppendTime) and adds the per-stage breakdown of where the time goes; ``eos`` runs the
chain exactly-once (target: p99 <= ``transaction_interval`` + 50 ms), ``eos-interval`` the same with
``runtime.transaction_early = 0`` (early commits off: every ``transaction_interval`` only; no
target, it shows what the early commits take off); ``nodelay`` (not run unless asked for) the
default chain with ``socket.nagle.disable=true``, no target. ``raw`` is the baseline:
the same chain as three raw confluent-kafka loops (:mod:`bench.peers.raw_loop`) in one process,
what this broker and machine give a chain without kstream; every kstream variant's verdict
records its figures. ``raw-envelope`` (informational) is that chain with each loop writing the
six headers a kstream node writes (design.md s.3), fresh on every hop: how much of kstream's
distance to ``raw`` the envelope itself takes. Writes
``bench/results/latency.json`` (``latency-<rate>.json`` for another rate than 5,000).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer, Producer

from bench import stages
from bench.common import (
    BenchError,
    ProcessContender,
    broker,
    create_topics,
    kstream_run,
    machine,
    provision_topology,
    versions,
    write_json,
)
from bench.contenders import runtime_config
from bench.peers.kstream_app import build, env_for
from bench.results import add_tree_args, check_tree, verdict, verdict_text
from kstream.config import RuntimeSettings
from kstream.dev.broker import JVM_PROFILES

TARGET_P99_MS = 50.0
"""At-least-once p99 target at 5,000 msgs/s; at 500 msgs/s and below it is 20 ms."""
TARGET_P50_MS = 10.0
"""At-least-once p50 target above 500 msgs/s."""
EOS_MARGIN_MS = 50.0
"""Exactly-once: p99 <= transaction interval + this."""
APP = "bench/peers/kstream_app.py:topology"

# name -> (librdkafka overrides via -X, [runtime] settings, processing)
VARIANTS: dict[str, tuple[dict[str, str], dict[str, Any], str]] = {
    "default": ({}, {}, "at_least_once"),
    "stages": ({}, {}, "at_least_once"),
    "eos": ({}, {}, "exactly_once"),
    "eos-interval": ({}, {"transaction_early": 0}, "exactly_once"),
    # TCP_NODELAY on kstream's clients (librdkafka leaves Nagle's algorithm on; Kafka's Java
    # client turns it off): whether that helps, measured against `default` in the same rounds.
    "nodelay": ({"socket.nagle.disable": "true"}, {}, "at_least_once"),
    # The baseline: the same chain as three raw confluent-kafka loops (bench.peers.raw_loop --eager,
    # one process, one thread per hop, kstream's client settings), on the same broker and feeder.
    "raw": ({}, {}, "raw"),
    # The raw chain writing kstream's six headers on every hop (bench.passthrough.envelope_headers).
    "raw-envelope": ({}, {}, "raw-envelope"),
}
BASELINE = "raw"
RAW = {"raw", "raw-envelope"}
"""Processing kinds that run bench.peers.raw_loop instead of kstream."""
INFORMATIONAL = {"eos-interval", "nodelay", "raw-envelope"}
"""Variants reported without a target of their own."""


def target_ms(name: str, rate: float, runtime: dict[str, Any]) -> float:
    if VARIANTS[name][2] == "exactly_once":
        interval = runtime.get("transaction_interval", RuntimeSettings().transaction_interval)
        return float(interval) * 1000 + EOS_MARGIN_MS
    return TARGET_P99_MS if rate > 500 else 20.0


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


def run_variant(bootstrap: str, name: str, kafka: dict[str, str], runtime: dict[str, Any], processing: str, *,
                rate: float, seconds: float, warmup_s: float, partitions: int, created: list[str]) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:6]
    source, output, ns = f"bench.lat.in.{tag}", f"bench.lat.out.{tag}", f"benchlat{tag}"
    create_topics(bootstrap, [source], partitions)
    create_topics(bootstrap, [output], partitions, {"message.timestamp.type": "LogAppendTime"})
    created += [source, output]
    if name == "stages":
        app, env = stages.APP, stages.env_for(source, output, processing=processing)
        created += provision_topology(stages.build(source, output, processing=processing), bootstrap, ns, partitions)
        stages.log_append_time(bootstrap, stages.chain_topics(ns, source, output)[:-1])
    else:
        kind = "at_least_once" if processing in RAW else processing
        app, env = APP, env_for(source, output, shape="chain3", processing=kind)
        chain = build(source, output, shape="chain3", processing=kind)
        created += provision_topology(chain, bootstrap, ns, partitions)
    config: Path | None = None
    if runtime:
        config = runtime_config(Path(tempfile.mkstemp(prefix="bench-lat-", suffix=".toml")[1]), runtime)
    proc: ProcessContender
    if processing in RAW:
        middle = [chain.nodes[n].input_topic(ns) for n in ("b", "c")]
        flags = ["--eager", "--envelope"] if processing == "raw-envelope" else ["--eager"]
        proc = ProcessContender(f"latency-{name}", [sys.executable, "-m", "bench.peers.raw_loop", *flags, bootstrap, source, output,
                                                    *middle], stop_signal=15)
    else:
        proc = kstream_run(f"latency-{name}", app, bootstrap=bootstrap, namespace=ns, env=env, kafka=kafka, config=config)
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
        "kafka_overrides": kafka, "runtime": runtime, "processing": processing, "sent": sent, "received": len(app),
        "achieved_rate": achieved,
        "append_ms": {"p50": percentile(app, 50), "p95": percentile(app, 95), "p99": percentile(app, 99), "max": app[-1] if app else None},
        "receive_ms": {"p50": percentile(rcv, 50), "p95": percentile(rcv, 95), "p99": percentile(rcv, 99), "max": rcv[-1] if rcv else None},
        "chain_cpu_s_per_s": cpu / seconds, "peak_rss_mb": None if rss is None else rss / 2**20,
    }  # fmt: skip
    a = result["append_ms"]
    print(f"  {name:<14} p50 {a['p50']:6.1f}  p95 {a['p95']:6.1f}  p99 {a['p99']:6.1f}  max {a['max']:6.1f} ms"
          f"  ({len(app):,}/{sent:,} at {achieved:,.0f}/s; receive p99 {result['receive_ms']['p99']:.1f} ms;"
          f" chain CPU {result['chain_cpu_s_per_s']:.2f} s/s)", flush=True)
    if name == "stages":
        result["stages_ms"] = stages.breakdown(bootstrap, stages.chain_topics(ns, source, output), sent)
        print(f"  stages p50/p99 ms: {stages.describe(result['stages_ms'])}", flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.latency", description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=5000, help="input msgs/s (default 5000)")
    ap.add_argument("--seconds", type=float, default=60, help="measured seconds per variant and round (default 60)")
    ap.add_argument("--warmup", type=float, default=3, help="seconds of paced warm-up traffic, not measured (default 3)")
    ap.add_argument("--broker-warmup", type=float, default=60,
                    help="seconds of the raw chain at --rate before the first round, not measured: the broker's JIT "
                         "compiles its hot paths (default 60)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds; each runs every variant in turn (default 3)")
    ap.add_argument("--partitions", type=int, default=6)
    ap.add_argument("--jvm", choices=list(JVM_PROFILES), default="kafka",
                    help="JVM profile of the local broker the benchmark starts (default kafka: Kafka's own settings)")
    ap.add_argument("--variants", default="raw,raw-envelope,default,stages,eos,eos-interval",
                    help="comma-separated subset of " + ", ".join(VARIANTS))
    add_tree_args(ap)
    args = ap.parse_args(argv)
    tree = check_tree(args.allow_dirty)
    names = [n.strip() for n in args.variants.split(",") if n.strip()]
    if any(n not in VARIANTS for n in names) or len(set(names)) != len(names):
        ap.error(f"choose distinct variants from {', '.join(VARIANTS)}")
    machine_before = machine()
    rounds: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    with broker(args.jvm) as handle:
        created = handle.created
        try:
            print(f"broker {handle.bootstrap}; chain a -> b -> c, {args.rate:,.0f} msgs/s for {args.seconds:g} s; "
                  f"load {machine_before['loadavg']}", flush=True)
            common = {"rate": args.rate, "warmup_s": args.warmup, "partitions": args.partitions, "created": created}
            if args.broker_warmup > 0:
                print(f"broker warm-up: the raw chain for {args.broker_warmup:g} s (not measured)", flush=True)
                run_variant(handle.bootstrap, "raw", *VARIANTS["raw"], seconds=args.broker_warmup, **common)
            for i in range(args.rounds):
                print(f"round {i + 1}/{args.rounds}", flush=True)
                for name in names:
                    rounds[name].append(run_variant(handle.bootstrap, name, *VARIANTS[name], seconds=args.seconds, **common))
            vers = versions(handle)
        except BenchError as exc:
            print(f"benchmark broke: {exc}", file=sys.stderr)
            return 1
    results = {n: summarize(r) for n, r in rounds.items()}
    verdicts = {}
    for n, r in results.items():
        if n == BASELINE or n in INFORMATIONAL:
            continue
        target = target_ms(n, args.rate, r["runtime"])
        v = verdict([x["append_ms"]["p99"] for x in r["rounds"]], target, at_least=False)
        at_least_once = VARIANTS[n][2] == "at_least_once"
        verdicts[n] = {"p99_ms": v["median"], "p50_ms": r["append_ms"]["p50"], "target_p99_ms": target, "met": v["met"],
                       "verdict": v, "target_p50_ms": TARGET_P50_MS if at_least_once and args.rate > 500 else None}
        if BASELINE in results:  # the same chain with raw loops, in the same rounds: what broker and machine allow
            verdicts[n]["raw_p99_ms"] = results[BASELINE]["append_ms"]["p99"]
            verdicts[n]["raw_p50_ms"] = results[BASELINE]["append_ms"]["p50"]
        print(f"{n}: p99 {verdict_text(v, '.1f')}")
    path = write_json("latency" if args.rate == 5000 else f"latency-{args.rate:g}", tree=tree, data={
        "benchmark": "latency", "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "config": {"rate": args.rate, "seconds": args.seconds, "warmup_s": args.warmup, "partitions": args.partitions,
                   "rounds": args.rounds, "broker_warmup_s": args.broker_warmup, "broker_jvm": args.jvm,
                   "chain": "a -> b -> c, bytes pass-through, one kstream run process (raw: bench.peers.raw_loop)",
                   "feeder": "linger.ms=0, acks=all, idempotent; t_us = time of produce()",
                   "measured": "output LogAppendTime - t_us (ms); receive_ms: reader's receive time - t_us; "
                               "a variant's figures are the medians over its rounds, every round is kept"},
        "machine_before": machine_before, "machine_after": machine(), "versions": vers,
        "variants": results, "targets": verdicts,
    })  # fmt: skip
    print(f"results: {path}")
    return 0


def summarize(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """One variant over its rounds: each percentile's median over the rounds, and every round."""
    first = rounds[0]
    out = {k: first[k] for k in ("kafka_overrides", "runtime", "processing")}
    for key in ("append_ms", "receive_ms"):
        out[key] = {q: statistics.median(r[key][q] for r in rounds) for q in ("p50", "p95", "p99", "max")}
    for key in ("chain_cpu_s_per_s", "achieved_rate"):
        out[key] = statistics.median(r[key] for r in rounds)
    out["rounds"] = rounds
    return out


if __name__ == "__main__":
    sys.exit(main())
