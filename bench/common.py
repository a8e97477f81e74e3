"""Shared pieces of the benchmarks: a broker, topics, input data, and the throughput meter.

The meter watches an output topic's high watermarks (summed over partitions) every 50 ms and
times the *steady part* of a run: from the moment the output holds ``lo`` (5%) of the expected
messages to the moment it holds all of them. Group join, metadata lookups and the first fetch
happen before the 5% mark, so they are excluded; the first 5% doubles as a warm-up. Crossing
times (and CPU counters) are interpolated linearly between the two samples around each mark.
"""

from __future__ import annotations

import json
import math
import os
import socket
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

BOOTSTRAP_ENV = "KSTREAM_BENCH_BOOTSTRAP"
SAMPLE_INTERVAL = 0.05
LOW_MARK = 0.05
RESULTS_DIR = Path(__file__).resolve().parent / "results"
_CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- the broker ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class BrokerHandle:
    bootstrap: str
    pid: int | None
    """The broker's process id when this run started it (its CPU time is then reported)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def broker() -> Iterator[BrokerHandle]:
    """``$KSTREAM_BENCH_BOOTSTRAP`` if set, else a fresh local broker in a temp dir (stopped after)."""
    given = os.environ.get(BOOTSTRAP_ENV)
    if given:
        yield BrokerHandle(given, None)
        return
    from kstream.dev.broker import LocalBroker

    with tempfile.TemporaryDirectory(prefix="kstream-bench-") as tmp:
        local = LocalBroker(Path(tmp))
        print(f"starting a local broker in {tmp} ...", flush=True)
        info, _ = local.start(port=free_port())
        try:
            yield BrokerHandle(info.bootstrap, info.pid)
        finally:
            local.stop()


def process_cpu(pid: int | None) -> float | None:
    """User+system CPU seconds of another process (Linux ``/proc``), or None if unknown."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    # After the ")" of the command name: state is field 0, utime 11, stime 12 (man 5 proc).
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


# -- topics and data ------------------------------------------------------------------------------


def create_topics(bootstrap: str, names: Sequence[str], partitions: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for fut in admin.create_topics([NewTopic(n, partitions, 1) for n in names], request_timeout=30).values():
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


def produce_input(bootstrap: str, topic: str, count: int) -> int:
    """Write ``count`` keyed JSON records to ``topic``; returns the total value bytes."""
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
                produce(topic, value, key)
                break
            except BufferError:
                poll(0.05)
        if i % 10_000 == 0:
            poll(0)
    left = p.flush(120)
    if left:
        raise RuntimeError(f"{left} input records not acknowledged")
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
) -> Measurement:
    """Run ``contender`` in a thread until ``output`` holds ``expected`` records; time the steady part."""
    counter = WatermarkCounter(bootstrap, output, partitions)
    stop = threading.Event()
    errors: list[BaseException] = []

    def target() -> None:
        try:
            contender(stop)
        except BaseException as exc:
            errors.append(exc)

    samples: list[tuple[float, int, float, float | None]] = []  # (wall, count, own cpu, broker cpu)
    thread = threading.Thread(target=target, name=f"bench-{name}", daemon=True)
    t0 = time.perf_counter()
    thread.start()
    try:
        last_change, last_count = t0, -1
        while True:
            time.sleep(SAMPLE_INTERVAL)
            count = counter.count()
            now = time.perf_counter()
            samples.append((now, count, time.process_time(), process_cpu(broker_pid)))
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
        print(f"  note: {name} wrote {samples[-1][1] - expected} more messages than expected (duplicates)")
    return _measure(name, samples, expected, t0)


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


# -- reporting ----------------------------------------------------------------------------------------


def median_of(runs: Sequence[Measurement]) -> dict[str, Any]:
    """Medians of the numeric figures of repeated runs of one contender."""
    def med(values: list[float | None]) -> float | None:
        known = [v for v in values if v is not None]
        return statistics.median(known) if known else None

    return {
        "runs": len(runs),
        "msgs_per_s": med([r.msgs_per_s for r in runs]),
        "cpu_s_per_100k": med([r.cpu_s_per_100k for r in runs]),
        "broker_cpu_s_per_100k": med([r.broker_cpu_s_per_100k for r in runs]),
        "startup_s": med([r.startup_s for r in runs]),
        "all_msgs_per_s": [round(r.msgs_per_s) for r in runs],
    }


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))) for r in rows]
    return "\n".join(out)


def write_json(name: str, data: dict[str, Any]) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path
