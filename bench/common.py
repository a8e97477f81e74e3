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
                produce(topic, value, key, headers=headers(i) if headers is not None else None)
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
        print(f"  note: {name} wrote {samples[-1][1] - expected} more messages than expected (duplicates)")
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


# -- subprocess contenders -------------------------------------------------------------------------

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
LOGS_DIR = RESULTS_DIR / "logs"


def proc_status_kb(pid: int | None, field: str) -> int | None:
    """A ``kB`` field of ``/proc/<pid>/status`` (``VmRSS``, ``VmHWM``...), or None if gone."""
    if pid is None:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def rss_bytes(pid: int | None) -> int | None:
    kb = proc_status_kb(pid, "VmRSS")
    return None if kb is None else kb * 1024


class ProcessContender:
    """A contender that is its own process: started on ``__call__``, stopped by a signal.

    Its CPU time (:meth:`cpu`) and peak RSS (:meth:`peak_rss`, ``VmHWM``) are read from
    ``/proc`` while it runs; the last value read is kept once it has exited. Its output goes to
    ``bench/results/logs/<name>.log``. Dying before it is stopped fails the run; a non-zero exit
    status after the stop signal is only recorded (:attr:`exit_code`).
    """

    def __init__(self, name: str, argv: Sequence[str], *, env: dict[str, str] | None = None,
                 stop_signal: int = 15, stop_timeout: float = 60.0) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = {**os.environ, **(env or {})}
        self.stop_signal = stop_signal
        self.stop_timeout = stop_timeout
        self.pid: int | None = None
        self.exit_code: int | None = None
        self._cpu = 0.0
        self._hwm: int | None = None
        LOGS_DIR.mkdir(parents=True, exist_ok=True)
        self.log = LOGS_DIR / f"{name}.log"

    def __call__(self, stop: threading.Event) -> None:
        import subprocess

        with self.log.open("wb") as log:
            proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=REPO)
            self.pid = proc.pid
            try:
                while not stop.wait(0.1):
                    if proc.poll() is not None:
                        raise RuntimeError(f"{self.name} exited with {proc.returncode} before the end; "
                                           f"log {self.log}:\n{self.tail()}")
                self.cpu()
                self.peak_rss()
                proc.send_signal(self.stop_signal)
                try:
                    self.exit_code = proc.wait(self.stop_timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    self.exit_code = proc.wait(10)
                    raise RuntimeError(f"{self.name} did not stop within {self.stop_timeout:g} s (killed)") from None
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(10)

    def cpu(self) -> float:
        value = process_cpu(self.pid)
        if value is not None:
            self._cpu = value
        return self._cpu

    def peak_rss(self) -> int | None:
        kb = proc_status_kb(self.pid, "VmHWM")
        if kb is not None:
            self._hwm = kb * 1024
        return self._hwm

    def tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def peer_venv(name: str, requirements: Sequence[str]) -> Path:
    """``bench/.venv-<name>`` with ``requirements`` from PyPI, created on first use; its python.

    A stamp file records what was installed: a venv whose stamp differs is rebuilt.
    """
    import shutil
    import subprocess
    import sys

    venv = BENCH_DIR / f".venv-{name}"
    python = venv / "bin" / "python"
    stamp = venv / ".bench-installed"
    wanted = " ".join(requirements)
    if python.exists() and stamp.exists() and stamp.read_text().strip() == wanted:
        return python
    print(f"creating {venv} with {wanted} (first use) ...", flush=True)
    shutil.rmtree(venv, ignore_errors=True)
    base = shutil.which("python3") or sys.executable
    subprocess.run([base, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--upgrade", "pip"], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", *requirements], check=True)
    stamp.write_text(wanted + "\n")
    return python


def package_versions(python: Path | str, packages: Sequence[str]) -> dict[str, str | None]:
    """Installed versions of ``packages`` in the interpreter ``python`` (None if missing)."""
    import subprocess

    code = ("import importlib.metadata as m, json, sys\n"
            "def v(p):\n    try: return m.version(p)\n    except m.PackageNotFoundError: return None\n"
            "print(json.dumps({p: v(p) for p in sys.argv[1:]}))")
    out = subprocess.run([str(python), "-c", code, *packages], capture_output=True, text=True, check=True)
    result: dict[str, str | None] = json.loads(out.stdout)
    return result


def versions(handle: BrokerHandle | None = None) -> dict[str, Any]:
    """kstream's commit, Python, confluent-kafka / librdkafka and the broker's Kafka version."""
    import platform
    import subprocess
    from importlib.metadata import version

    import confluent_kafka

    def git(*args: str) -> str | None:
        out = subprocess.run(["git", *args], capture_output=True, text=True, cwd=REPO, check=False)
        return out.stdout.strip() if out.returncode == 0 else None

    sha = git("rev-parse", "HEAD")
    dirty = git("status", "--porcelain", "--", "kstream")
    kafka: str | None
    if handle is not None and handle.pid is None:
        kafka = "external broker (version not read)"
    else:
        from kstream.dev.broker import kafka_version

        kafka = kafka_version()
    return {
        "kstream_git_sha": sha, "kstream_dirty": bool(dirty),
        "python": platform.python_version(),
        "confluent_kafka": version("confluent-kafka"), "librdkafka": confluent_kafka.libversion()[0],
        "kafka_broker": kafka,
    }  # fmt: skip


def machine() -> dict[str, Any]:
    model = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "cpu_model": model, "loadavg": [round(x, 2) for x in os.getloadavg()]}


# -- kstream topologies for the benchmarks -----------------------------------------------------------


def provision_topology(topology: Any, bootstrap: str, namespace: str, partitions: int) -> list[str]:
    """Create the node input topics of ``topology`` (and any ``to=`` topics); returns their names."""
    from kstream.app import admin
    from kstream.config import load_settings
    from kstream.provision import apply, plan

    settings = load_settings(environ={}, overrides={"bootstrap_servers": bootstrap, "namespace": namespace,
                                                    "topics": {"partitions": partitions}})
    client = admin(settings)
    apply(plan(topology, settings, client, create_external=True), client)
    names = {n.input_topic(namespace) for n in topology.nodes.values()} | {t for n in topology.nodes.values() for t in n.to}
    return sorted(names)


def kstream_run(name: str, app: str, *, bootstrap: str, namespace: str, env: dict[str, str] | None = None,
                kafka: dict[str, str] | None = None, config: Path | None = None) -> ProcessContender:
    """A ``kstream run APP`` subprocess with the project's venv (all the app's nodes)."""
    import sys

    exe = Path(sys.executable).parent / "kstream"
    argv = [str(exe)]
    if config is not None:
        argv += ["--config", str(config)]
    argv += ["-b", bootstrap, "-n", namespace]
    for k, v in (kafka or {}).items():
        argv += ["-X", f"{k}={v}"]
    # `kstream run` refuses to start without every topic it reads (a replay topic, for one):
    # whatever the benchmark did not create itself is created as `topics apply` would.
    import os
    import subprocess

    subprocess.run([*argv, "topics", "apply", app, "--create-external"], env={**os.environ, **(env or {})},
                   cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    argv += ["run", app, "--log-level", "warning"]
    return ProcessContender(name, argv, env=env, stop_signal=15)


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


def summary(runs: Sequence[Measurement]) -> dict[str, Any]:
    """:func:`median_of` plus the median peak RSS and the messages each run covered."""
    med = median_of(runs)
    rss = [r.peak_rss_mb for r in runs if r.peak_rss_mb is not None]
    med["peak_rss_mb"] = statistics.median(rss) if rss else None
    med["messages"] = runs[0].messages if runs else None
    return med
