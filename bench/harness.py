"""The benchmark harness: a broker, topics, input data, the throughput meter and rounds of contenders.

The meter watches an output topic's high watermarks (summed over partitions) every 50 ms and
times the *steady part* of a run: from the moment the output holds ``lo`` (5%) of the expected
messages to the moment it holds all of them. Group join, metadata lookups and the first fetch
happen before the 5% mark, so they are excluded; the first 5% doubles as a warm-up. Crossing
times (and CPU counters) are interpolated linearly between the two samples around each mark.
"""

from __future__ import annotations

import math
import os
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from bench.procstats import ProcessContender, process_cpu
from kstream.dev.broker import JvmProfile, LocalBroker

BOOTSTRAP_ENV = "KSTREAM_BENCH_BOOTSTRAP"
SAMPLE_INTERVAL = 0.05
LOW_MARK = 0.05


# -- the broker ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class BrokerHandle:
    bootstrap: str
    pid: int | None
    """The broker's process id when this run started it (its CPU time is then reported)."""
    created: list[str] = field(default_factory=list, compare=False)
    """Topics the run created: deleted at the end on an external broker (a local one goes whole)."""
    jvm: JvmProfile | None = None
    """The local broker's JVM profile (:data:`kstream.dev.broker.JVM_PROFILES`); None: external."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def broker(jvm: JvmProfile = "dev") -> Iterator[BrokerHandle]:
    """``$KSTREAM_BENCH_BOOTSTRAP`` if set (the topics in ``created`` are deleted after), else a fresh
    local broker in a temp dir (stopped after), started with the JVM profile ``jvm``."""
    given = os.environ.get(BOOTSTRAP_ENV)
    if given:
        handle = BrokerHandle(given, None)
        try:
            yield handle
        finally:
            delete_topics(given, handle.created)
        return
    with tempfile.TemporaryDirectory(prefix="kstream-bench-") as tmp:
        local = LocalBroker(Path(tmp), jvm=jvm)
        print(f"starting a local broker ({jvm} JVM) in {tmp} ...", flush=True)
        info, _ = local.start(port=free_port())
        try:
            yield BrokerHandle(info.bootstrap, info.pid, jvm=jvm)
        finally:
            local.stop()


# -- topics and data ------------------------------------------------------------------------------


def create_topics(bootstrap: str, names: Sequence[str], partitions: int, config: dict[str, str] | None = None) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    new = [NewTopic(n, partitions, 1, config=dict(config or {})) for n in names]
    for fut in admin.create_topics(new, request_timeout=30).values():
        fut.result(60)
    deadline = time.monotonic() + 30
    while True:  # until every partition has a leader: clients then start without retries
        meta = admin.list_topics(timeout=10).topics
        if all(n in meta and len(meta[n].partitions) == partitions
               and all(p.leader >= 0 for p in meta[n].partitions.values()) for n in names):
            return
        if time.monotonic() > deadline:
            raise BenchError(f"topics {', '.join(names)} got no leaders within 30 s")
        time.sleep(0.1)


def delete_topics(bootstrap: str, names: Sequence[str]) -> None:
    """Best effort: a benchmark against a shared broker should not leave its topics behind."""
    if not names:
        return
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for fut in admin.delete_topics(list(names), request_timeout=30).values():
        try:
            fut.result(60)
        except KafkaException:
            pass


def payload(i: int) -> bytes:
    """A ~200 byte JSON record, a little different each time."""
    return orjson.dumps({
        "id": i,
        "user": f"user-{i % 5000:05d}",
        "kind": ("click", "view", "buy", "share")[i % 4],
        "amount": (i * 37) % 10_000 / 100,
        "ts": 1_700_000_000_000 + i,
        "tags": ["alpha", "beta", "gamma"][: 1 + i % 3],
        "note": "lorem ipsum dolor sit amet consectetur adipiscing elit sed do",
        "ok": i % 7 != 0,
    })  # fmt: skip


def produce_input(bootstrap: str, topic: str, count: int, headers: Callable[[int], Any] | None = None) -> int:
    """Write ``count`` keyed JSON records to ``topic`` (with ``headers(i)`` when given); returns
    the total value bytes."""
    p = Producer({
        "bootstrap.servers": bootstrap, "linger.ms": 50, "batch.size": 1_000_000, "acks": "all",
        "enable.idempotence": True, "queue.buffering.max.messages": 500_000,
    })  # fmt: skip
    produce, poll = p.produce, p.poll
    total = 0
    for i in range(count):
        value = payload(i)
        total += len(value)
        key = f"user-{i % 5000:05d}".encode()
        while True:
            try:
                produce(topic, value, key, headers=headers(i) if headers is not None else None)
                break
            except BufferError:
                poll(0.05)
        if i % 10_000 == 0:
            poll(0)
    left = p.flush(120)
    if left:
        raise BenchError(f"{left} input records not acknowledged")
    return total


class WatermarkCounter:
    """Number of records in a topic: the sum of its partitions' high watermarks (one client)."""

    def __init__(self, bootstrap: str, topic: str, partitions: int) -> None:
        self._consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "kstream-bench-meter"})
        self._parts = [TopicPartition(topic, p) for p in range(partitions)]
        self._last = [0] * partitions

    def count(self) -> int:
        """The current total; a partition whose leader is not ready yet keeps its last value."""
        for i, tp in enumerate(self._parts):
            try:
                _, high = self._consumer.get_watermark_offsets(tp, timeout=10, cached=False)
            except KafkaException as exc:
                if not exc.args[0].retriable() and exc.args[0].code() != KafkaError.NOT_LEADER_FOR_PARTITION:
                    raise
                continue
            self._last[i] = max(high, 0)
        return sum(self._last)

    def close(self) -> None:
        self._consumer.close()


def read_all(bootstrap: str, topic: str, count: int, *, timeout: float = 120.0,
             committed: bool = False) -> list[Any]:
    """Every record of ``topic`` from the beginning, until ``count`` or ``timeout``."""
    c = Consumer({
        "bootstrap.servers": bootstrap, "group.id": "bench-reader-" + os.urandom(4).hex(),
        "auto.offset.reset": "earliest", "enable.auto.commit": False,
        "isolation.level": "read_committed" if committed else "read_uncommitted",
    })  # fmt: skip
    c.subscribe([topic])
    out: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while len(out) < count and time.monotonic() < deadline:
            out.extend(m for m in c.consume(1000, 0.2) if m.error() is None)
    finally:
        c.close()
    return out


# -- running and measuring one contender -----------------------------------------------------------

Contender = Callable[[threading.Event], None]
"""Runs until the event is set, then stops cleanly (commits) and returns; raises if it broke."""


@dataclass
class Measurement:
    name: str
    messages: int
    msgs_per_s: float
    cpu_s_per_100k: float
    """CPU seconds of this benchmark process (all threads, librdkafka's included) per 100k messages."""
    broker_cpu_s_per_100k: float | None
    steady_s: float
    """Seconds from the low mark to the last message."""
    startup_s: float
    """Seconds from start until the first output message."""
    total_s: float
    peak_rss_mb: float | None = None
    """Peak resident memory (VmHWM) of the measured process, when it is a subprocess."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class BenchError(RuntimeError):
    """The run broke (a contender failed or stalled): the results would mean nothing."""


def run_contender(
    name: str,
    contender: Contender,
    *,
    bootstrap: str,
    output: str,
    partitions: int,
    expected: int,
    broker_pid: int | None,
    stall_timeout: float = 60.0,
    cpu: Callable[[], float] = time.process_time,
    peak_rss: Callable[[], int | None] | None = None,
) -> Measurement:
    """Run ``contender`` in a thread until ``output`` holds ``expected`` records; time the steady part.

    ``cpu`` is whose CPU time is measured (default: this process); a contender that runs a
    subprocess passes :meth:`ProcessContender.cpu` and :meth:`ProcessContender.peak_rss`.
    """
    counter = WatermarkCounter(bootstrap, output, partitions)
    stop = threading.Event()
    errors: list[BaseException] = []

    def target() -> None:
        try:
            contender(stop)
        except BaseException as exc:
            errors.append(exc)

    samples: list[tuple[float, int, float, float | None]] = []  # (wall, count, own cpu, broker cpu)
    peak: int | None = None
    thread = threading.Thread(target=target, name=f"bench-{name}", daemon=True)
    t0 = time.perf_counter()
    thread.start()
    try:
        last_change, last_count = t0, -1
        while True:
            time.sleep(SAMPLE_INTERVAL)
            count = counter.count()
            now = time.perf_counter()
            samples.append((now, count, cpu(), process_cpu(broker_pid)))
            if peak_rss is not None:
                rss = peak_rss()
                peak = rss if rss is not None else peak
            if count >= expected:
                break
            if errors:
                raise BenchError(f"{name} failed: {errors[0]!r}") from errors[0]
            if count != last_count:
                last_change, last_count = now, count
            elif now - last_change > stall_timeout:
                raise BenchError(f"{name} stalled at {count}/{expected} output messages for {stall_timeout:g} s")
    finally:
        stop.set()
        thread.join(60)
        counter.close()
    if thread.is_alive():
        raise BenchError(f"{name} did not stop within 60 s")
    if errors:
        raise BenchError(f"{name} failed while stopping: {errors[0]!r}") from errors[0]
    if samples[-1][1] > expected:
        print(f"  note: {name} wrote {samples[-1][1] - expected} more messages than expected (at-least-once: "
              "duplicates; exactly-once: transaction markers, which count in the high watermarks)")
    m = _measure(name, samples, expected, t0)
    if peak is not None:
        m.peak_rss_mb = peak / 2**20
    return m


def _crossing(samples: list[tuple[float, int, float, float | None]], mark: float) -> tuple[float, float, float | None]:
    """(wall, own cpu, broker cpu) when the output count crossed ``mark``, interpolated."""
    prev = (samples[0][0], 0, samples[0][2], samples[0][3])
    for s in samples:
        if s[1] >= mark:
            span = s[1] - prev[1]
            f = (mark - prev[1]) / span if span > 0 else 1.0
            broker = None if s[3] is None or prev[3] is None else prev[3] + f * (s[3] - prev[3])
            return prev[0] + f * (s[0] - prev[0]), prev[2] + f * (s[2] - prev[2]), broker
        prev = s
    raise BenchError(f"the output never reached {mark:g} messages")


def _measure(name: str, samples: list[tuple[float, int, float, float | None]], expected: int, t0: float) -> Measurement:
    lo_mark = max(1.0, math.ceil(expected * LOW_MARK))
    t_lo, cpu_lo, broker_lo = _crossing(samples, lo_mark)
    t_hi, cpu_hi, broker_hi = _crossing(samples, expected)
    first = next(s[0] for s in samples if s[1] > 0)
    n = expected - lo_mark
    steady = max(t_hi - t_lo, 1e-9)
    broker = None if broker_lo is None or broker_hi is None else (broker_hi - broker_lo) / n * 100_000
    return Measurement(
        name=name, messages=expected, msgs_per_s=n / steady, cpu_s_per_100k=(cpu_hi - cpu_lo) / n * 100_000,
        broker_cpu_s_per_100k=broker, steady_s=steady, startup_s=first - t0, total_s=samples[-1][0] - t0,
    )


# -- rounds of subprocess contenders -------------------------------------------------------------------

ProcessFactory = Callable[[str, str, str, str], ProcessContender]
"""(bootstrap, input topic, output topic, run tag) -> a contender process reading input from the start."""


@dataclass
class Rounds:
    """Every measured run of every contender, and the input each read."""

    runs: dict[str, list[Measurement]]
    inputs: dict[str, tuple[str, int]]
    """contender -> (input topic, messages)."""
    exit_codes: dict[str, list[int | None]]


def run_process_rounds(
    handle: BrokerHandle,
    factories: dict[str, ProcessFactory],
    *,
    run_id: str,
    prefix: str,
    messages: int,
    partitions: int,
    repeat: int,
    warmup: int,
    created: list[str],
    limits: dict[str, int] | None = None,
    stall_timeout: float = 60.0,
    output_partitions: int | None = None,
) -> Rounds:
    """Fill the input topic(s), run an unrecorded warm-up round, then ``repeat`` rotated rounds.

    A contender in ``limits`` reads a topic holding only the first N records of the same data
    (a slow peer that would take too long on all of them); its figures are over those N.
    """
    limits = {n: min(v, messages) for n, v in (limits or {}).items() if n in factories}
    outp = output_partitions or partitions
    names = list(factories)
    exit_codes: dict[str, list[int | None]] = {n: [] for n in names}

    def one(name: str, source: str, count: int, tag: str) -> Measurement:
        output = f"{source}.out.{name}.{tag}"
        create_topics(handle.bootstrap, [output], outp)
        created.append(output)
        proc = factories[name](handle.bootstrap, source, output, f"{run_id}{tag}")
        created.extend(proc.topics)
        m = run_contender(name, proc, bootstrap=handle.bootstrap, output=output, partitions=outp, expected=count,
                          broker_pid=handle.pid, stall_timeout=stall_timeout, cpu=proc.cpu, peak_rss=proc.peak_rss)
        exit_codes[name].append(proc.exit_code)
        broker_cpu = "" if m.broker_cpu_s_per_100k is None else f", broker {m.broker_cpu_s_per_100k:.2f}"
        rss = "" if m.peak_rss_mb is None else f", peak RSS {m.peak_rss_mb:.0f} MB"
        print(f"  {tag:>6} {name:<12} {m.msgs_per_s:>10,.0f} msgs/s  {m.cpu_s_per_100k:.2f} CPU s/100k{broker_cpu}{rss}"
              f"  (startup {m.startup_s:.1f} s, steady {m.steady_s:.1f} s, exit {proc.exit_code})", flush=True)
        return m

    if warmup:
        warm = f"{prefix}.warm.{run_id}"
        create_topics(handle.bootstrap, [warm], partitions)
        created.append(warm)
        produce_input(handle.bootstrap, warm, warmup)
        print(f"warm-up ({warmup:,} messages, not recorded):", flush=True)
        for name in names:
            one(name, warm, warmup, "w")
        for codes in exit_codes.values():
            codes.clear()
    inputs: dict[str, tuple[str, int]] = {}
    by_count: dict[int, str] = {}
    for count in sorted({messages, *limits.values()}, reverse=True):
        topic = f"{prefix}.in{count}.{run_id}"
        create_topics(handle.bootstrap, [topic], partitions)
        created.append(topic)
        started = time.perf_counter()
        size = produce_input(handle.bootstrap, topic, count)
        print(f"input {topic}: {count:,} records, {size / count:.0f} B average value, "
              f"written in {time.perf_counter() - started:.1f} s", flush=True)
        by_count[count] = topic
    for name in names:
        count = limits.get(name, messages)
        inputs[name] = (by_count[count], count)
    runs: dict[str, list[Measurement]] = {n: [] for n in names}
    for r in range(repeat):
        order = names[r % len(names):] + names[: r % len(names)]
        for name in order:
            source, count = inputs[name]
            runs[name].append(one(name, source, count, f"r{r + 1}"))
    return Rounds(runs, inputs, exit_codes)
