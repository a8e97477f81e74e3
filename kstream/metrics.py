"""Metrics of every worker process, exposed in the Prometheus text format (prometheus-client).

One :class:`Metrics` per process, made at the edge (``kstream run``) and passed in: no
process-global registry. Each node a process runs gets a :class:`NodeStats`; the processor and
the worker write plain integers into it, and :class:`Metrics` turns them into metric families
only when ``/metrics`` is scraped. The hot path so pays an attribute increment per message, never
a lock: prometheus-client's own ``Counter.inc`` takes a mutex per call, which at ~100k messages/s
would cost more than the 5 % the metrics may take. For the same reason the two histograms time
one message in :data:`HISTOGRAM_EVERY` (the first, the ninth, ...): two clock reads and two
bucket searches per message cost ~0.5 us, a tenth of a pass-through message. Their ``_count``
is so the number of messages observed, not processed; ``kstream_records_processed_total`` counts
every message (read from the strategy, which counts anyway).

Thread safety: a node's counters are written by its handler threads (one with prefetch 1, the
pool with prefetch N) and read by the HTTP thread. ``x.n += 1`` on an ``int`` attribute of a
slotted object runs without a switch of the GIL in between (no Python call inside), so no
increment is lost; a reader sees a value that is at most a message old.

Every metric name is in :data:`MetricName`; a test checks the catalogue against what a scrape
shows, and the Grafana dashboard (helm/kstream/dashboards/kstream.json) against the catalogue.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Callable, Iterator
from typing import Literal, get_args

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from kstream.types import Record

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

MetricName = Literal[
    # Counters per node (labels topology, node).
    "kstream_records_processed_total",       # messages finished (outputs queued or sent to the Trash): the rate in
    "kstream_records_out_total",             # records produced to successors and to= topics
    "kstream_records_trashed_total",         # messages that went to the Trash (retries exhausted, permanent)
    "kstream_records_retried_total",         # failed attempts that will run again (in place or via .retry)
    "kstream_records_parked_total",          # messages parked behind their key's Trash entry
    "kstream_records_replayed_total",        # Trash replays (kstream-replay-of) the node took in
    "kstream_rate_limit_waits_total",        # calls that waited for the node's rate limiter
    "kstream_rate_limit_wait_seconds_total", # time handlers spent waiting for the rate limiter
    "kstream_rate_limited_total",            # RateLimited (429) raised by the handler
    "kstream_transactions_committed_total",  # exactly-once transactions committed
    "kstream_transactions_aborted_total",    # exactly-once transactions aborted (or failed to commit)
    "kstream_commit_failures_total",         # offset commits / flushes that failed (the worker stops)
    "kstream_rebalances_total",              # rebalance callbacks: assigned, revoked or lost (label event)
    # Histograms per node.
    "kstream_handler_duration_seconds",      # one message at the node: decode, handler, outputs queued (1 in HISTOGRAM_EVERY)
    "kstream_record_age_seconds",            # end-to-end age when processing starts: now - record timestamp (same sample)
    # Gauges.
    "kstream_in_flight_records",             # messages taken and not finished (running or queued)
    "kstream_buffered_records",              # messages fetched and held back by the poll loop (paused)
    "kstream_consumer_lag_records",          # per topic/partition: end offset - committed (as kstream lag)
    "kstream_committed_offset",              # per topic/partition: the group's committed offset
    "kstream_hanging_transaction_offset",    # per topic/partition: offset the last stable offset is stuck at
    "kstream_hanging_transaction_seconds",   # per topic/partition: how long it has been stuck
    "kstream_broker_reachable",              # 1 while the cluster answers the health probe, else 0
]
METRIC_NAMES: frozenset[str] = frozenset(get_args(MetricName))

DURATION_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                    2.5, 5.0, 10.0, 30.0, 60.0)
AGE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
               3600.0, 21600.0, 86400.0)
REBALANCE_EVENTS = ("assigned", "revoked", "lost")
HISTOGRAM_EVERY = 8
"""The duration and age histograms observe one message in this many."""

Partition = tuple[str, int]


class NodeStats:
    """One node's counters in one process. Written by the runtime, read by :class:`Metrics`."""

    __slots__ = ("age_buckets", "age_sum", "buffered", "commit_failures", "duration_buckets", "duration_sum",
                 "hanging_sink", "in_flight", "limit_wait_seconds", "limit_waits", "node", "parked", "processed", "rate_limited",
                 "rebalances", "records_out", "replayed", "retried", "seen", "topology", "transactions_aborted",
                 "transactions_committed", "trashed")

    def __init__(self, topology: str, node: str) -> None:
        self.topology = topology
        self.node = node
        self.seen = 0
        """Messages that passed the sampling check (see :data:`HISTOGRAM_EVERY`)."""
        self.records_out = self.trashed = self.retried = self.parked = self.replayed = 0
        self.limit_waits = self.rate_limited = 0
        self.limit_wait_seconds = 0.0
        self.transactions_committed = self.transactions_aborted = self.commit_failures = 0
        self.rebalances = dict.fromkeys(REBALANCE_EVENTS, 0)
        self.duration_buckets = [0] * (len(DURATION_BUCKETS) + 1)  # the last one is +Inf
        self.duration_sum = 0.0
        self.age_buckets = [0] * (len(AGE_BUCKETS) + 1)
        self.age_sum = 0.0
        self.in_flight: Callable[[], int] = _zero
        """Set by the worker, like ``processed`` and ``buffered``: read at scrape time, so the hot
        path keeps nothing up to date for them."""
        self.processed: Callable[[], int] = _zero
        self.hanging_sink: Callable[[str, int, int | None], None] | None = None
        """:meth:`Metrics.set_hanging` of the process's metrics (set by :meth:`Metrics.node`)."""
        self.buffered: Callable[[], int] = _zero

    def done(self, msg: Record, started: float, _now: Callable[[], float] = time.time,
             _bucket: Callable[[tuple[float, ...], float], int] = bisect.bisect_left) -> None:
        """One message finished (outputs queued or trashed); ``started`` is ``time.time()`` when
        it was taken. Wall clock for both figures: one clock read per message saved, and the
        age needs the wall clock anyway (a step of the clock may put one observation in the
        lowest bucket). The hot path: locals only, no branch but the timestamp's."""
        took = _now() - started
        self.duration_sum += took
        self.duration_buckets[_bucket(DURATION_BUCKETS, took)] += 1
        stamp = msg.timestamp()[1]
        if stamp > 0:  # -1: the record has no timestamp
            age = started - stamp * 0.001
            self.age_sum += age
            self.age_buckets[_bucket(AGE_BUCKETS, age)] += 1

    def set_hanging(self, topic: str, partition: int, stuck_offset: int | None) -> None:
        """For the runtime's hanging-transaction detector: see :meth:`Metrics.set_hanging`; a
        no-op for a worker built without metrics."""
        if self.hanging_sink is not None:
            self.hanging_sink(topic, partition, stuck_offset)

    def waited(self, seconds: float) -> None:
        """The rate limiter made a call wait ``seconds``."""
        self.limit_waits += 1
        self.limit_wait_seconds += seconds


def _zero() -> int:
    return 0


class Metrics(Collector):
    """The process's metrics: node stats, partition lag, hanging transactions, broker reachability.

    ``node`` and the setters may be called from any thread; :meth:`render` is what ``/metrics``
    serves.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)
        self._lock = threading.Lock()
        self._nodes: dict[tuple[str, str], NodeStats] = {}
        self._lag: dict[tuple[str, str], dict[Partition, tuple[int | None, int]]] = {}
        self._hanging: dict[Partition, tuple[int, float]] = {}
        self._reachable: bool | None = None

    def node(self, topology: str, node: str) -> NodeStats:
        """The stats of a node (the same object for the same node)."""
        with self._lock:
            stats = self._nodes.get((topology, node))
            if stats is None:
                stats = self._nodes[(topology, node)] = NodeStats(topology, node)
                stats.hanging_sink = self.set_hanging
            return stats

    def set_lag(self, topology: str, node: str, partitions: dict[Partition, tuple[int | None, int]]) -> None:
        """Per partition of the node's topics, the group's committed offset (None: never
        committed) and the end offset, as :func:`kstream.lag.node_lag` read them."""
        with self._lock:
            self._lag[(topology, node)] = dict(partitions)

    def set_hanging(self, topic: str, partition: int, stuck_offset: int | None, *, now: float | None = None) -> None:
        """A partition's last stable offset is stuck at ``stuck_offset`` behind the high watermark
        (an open transaction nobody finishes); ``None``: it is not (any more). Setting the same
        offset again keeps the time it was first seen stuck."""
        with self._lock:
            if stuck_offset is None:
                self._hanging.pop((topic, partition), None)
                return
            known = self._hanging.get((topic, partition))
            if known is None or known[0] != stuck_offset:
                self._hanging[(topic, partition)] = (stuck_offset, time.time() if now is None else now)

    def set_reachable(self, reachable: bool) -> None:
        self._reachable = reachable

    def render(self) -> bytes:
        """The Prometheus text exposition of everything."""
        return generate_latest(self.registry)

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            nodes = list(self._nodes.values())
            lag = {k: dict(v) for k, v in self._lag.items()}
            hanging = dict(self._hanging)
        yield from _node_families(nodes)
        yield from _partition_families(lag)
        offset = GaugeMetricFamily("kstream_hanging_transaction_offset", "Offset the last stable offset is stuck at "
                                   "behind the high watermark (a hanging transaction)", labels=["topic", "partition"])
        stuck = GaugeMetricFamily("kstream_hanging_transaction_seconds", "Seconds the last stable offset has been "
                                  "stuck", labels=["topic", "partition"])
        now = time.time()
        for (topic, part), (at, since) in sorted(hanging.items()):
            offset.add_metric([topic, str(part)], at)
            stuck.add_metric([topic, str(part)], max(0.0, now - since))
        yield offset
        yield stuck
        if self._reachable is not None:
            yield GaugeMetricFamily("kstream_broker_reachable", "1 while the Kafka cluster answers the health probe",
                                    value=1 if self._reachable else 0)


_COUNTERS: tuple[tuple[str, str, Callable[[NodeStats], float]], ...] = (
    ("kstream_records_processed", "Messages finished: outputs queued or sent to the Trash", lambda s: s.processed()),
    ("kstream_records_out", "Records produced to successors and to= topics", lambda s: s.records_out),
    ("kstream_records_trashed", "Messages sent to the Trash", lambda s: s.trashed),
    ("kstream_records_retried", "Failed attempts that run again", lambda s: s.retried),
    ("kstream_records_parked", "Messages parked behind their key's Trash entry", lambda s: s.parked),
    ("kstream_records_replayed", "Trash replays taken in", lambda s: s.replayed),
    ("kstream_rate_limit_waits", "Calls that waited for the rate limiter", lambda s: s.limit_waits),
    ("kstream_rate_limit_wait_seconds", "Seconds spent waiting for the rate limiter", lambda s: s.limit_wait_seconds),
    ("kstream_rate_limited", "RateLimited (429) raised by the handler", lambda s: s.rate_limited),
    ("kstream_transactions_committed", "Exactly-once transactions committed", lambda s: s.transactions_committed),
    ("kstream_transactions_aborted", "Exactly-once transactions aborted", lambda s: s.transactions_aborted),
    ("kstream_commit_failures", "Failed offset commits (or flushes before them)", lambda s: s.commit_failures),
)
_NODE = ["topology", "node"]


def _node_families(nodes: list[NodeStats]) -> Iterator[Metric]:
    for name, doc, value in _COUNTERS:
        family = CounterMetricFamily(name, doc, labels=_NODE)
        for s in nodes:
            family.add_metric([s.topology, s.node], value(s))
        yield family
    rebalances = CounterMetricFamily("kstream_rebalances", "Rebalance callbacks: partitions assigned, revoked or lost",
                                     labels=[*_NODE, "event"])
    for s in nodes:
        for event in REBALANCE_EVENTS:
            rebalances.add_metric([s.topology, s.node, event], s.rebalances[event])
    yield rebalances
    duration = HistogramMetricFamily("kstream_handler_duration_seconds", "Seconds to process one message: decode, "
                                     f"handler, outputs queued (one message in {HISTOGRAM_EVERY})", labels=_NODE)
    age = HistogramMetricFamily("kstream_record_age_seconds", "Age of a record when the node starts it: now - record "
                                f"timestamp (one message in {HISTOGRAM_EVERY})", labels=_NODE)
    in_flight = GaugeMetricFamily("kstream_in_flight_records", "Messages taken and not finished", labels=_NODE)
    buffered = GaugeMetricFamily("kstream_buffered_records", "Messages fetched and held back while paused", labels=_NODE)
    for s in nodes:
        duration.add_metric([s.topology, s.node], _cumulative(DURATION_BUCKETS, s.duration_buckets), s.duration_sum)
        age.add_metric([s.topology, s.node], _cumulative(AGE_BUCKETS, s.age_buckets), s.age_sum)
        in_flight.add_metric([s.topology, s.node], s.in_flight())
        buffered.add_metric([s.topology, s.node], s.buffered())
    yield from (duration, age, in_flight, buffered)


def _cumulative(bounds: tuple[float, ...], counts: list[int]) -> list[tuple[str, float]]:
    result: list[tuple[str, float]] = []
    total = 0
    for bound, count in zip((*(repr(b) for b in bounds), "+Inf"), list(counts), strict=True):
        total += count
        result.append((bound, total))
    return result


def _partition_families(lag: dict[tuple[str, str], dict[Partition, tuple[int | None, int]]]) -> Iterator[Metric]:
    labels = [*_NODE, "topic", "partition"]
    behind = GaugeMetricFamily("kstream_consumer_lag_records", "End offset minus the committed offset of the node's "
                               "group (never committed: from 0), as kstream lag shows it", labels=labels)
    committed = GaugeMetricFamily("kstream_committed_offset", "The node's group committed offset (absent: none yet)",
                                  labels=labels)
    for (topology, node), parts in sorted(lag.items()):
        for (topic, part), (offset, end) in sorted(parts.items()):
            names = [topology, node, topic, str(part)]
            behind.add_metric(names, partition_lag(offset, end))
            if offset is not None:
                committed.add_metric(names, offset)
    yield behind
    yield committed


def partition_lag(committed: int | None, end: int) -> int:
    """Records a group still has to read in a partition: the one formula of ``kstream lag`` and
    ``kstream_consumer_lag_records``. Never committed counts from offset 0 (an upper bound
    where retention already deleted the start)."""
    return max(0, end - (committed or 0))
