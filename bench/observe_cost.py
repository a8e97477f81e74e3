"""CPU cost per message of metrics and tracing, in the processor alone (no broker).

    .venv/bin/python -m bench.observe_cost [--rounds 40]

The pass-through benchmark (``bench.passthrough --contenders kstream-bytes,kstream-bytes-metrics,
kstream-bytes-tracing``) measures the same end to end, but on a shared 2-core machine its
round-to-round noise (+-30 %) hides a cost of a few percent. Here one thread runs
``NodeProcessor.handle`` of the pass-through node (``bytes -> bytes``, headerless records, a
producer that drops) over 1,000 records, 10 times per round; the variants take turns within each
round and the best round of each is kept (CPU time of the process, ``time.process_time``):

* ``plain``: no metrics, no tracing (what ``kstream-bytes`` runs);
* ``metrics``: counting into :class:`kstream.metrics.Metrics`;
* ``tracing``: OpenTelemetry tracing with no tracer provider configured (``kstream[otel]``
  without an SDK: no exporter);
* ``tracing-sdk``: an SDK ``TracerProvider`` with no span processor (spans made, then dropped).

The added microseconds per message are set against the CPU a pass-through message costs end to
end (``--per-message-us``, default from the latest bench/results/passthrough-observe.json).
Writes ``bench/results/observe-cost.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from bench.common import RESULTS_DIR, write_json
from bench.results import add_tree_args, check_tree
from kstream.metrics import Metrics
from kstream.runtime.processor import NodeProcessor
from kstream.topology import Topology
from kstream.tracing import OtelTracing, otel_tracing


class _Drop:
    def produce(self, topic: str, value: bytes | None, key: bytes | None, headers: Any) -> None:
        return None


class _Record:
    """A headerless record shaped like confluent_kafka.Message (timestamp fixed: no clock read)."""

    __slots__ = ("_offset", "_stamp")

    def __init__(self, offset: int, stamp: int) -> None:
        self._offset, self._stamp = offset, stamp

    def topic(self) -> str:
        return "src"

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes:
        return b"k"

    def value(self) -> bytes:
        return b"x" * 186

    def headers(self) -> None:
        return None

    def timestamp(self) -> tuple[int, int]:
        return (1, self._stamp)


def _processor(**options: Any) -> NodeProcessor:
    topology = Topology("bench")

    @topology.node("pass", source="src", to="dst")
    def passthrough(v: bytes) -> bytes:
        return v

    return NodeProcessor(topology, topology.get("pass"), namespace="ns", producer=_Drop(), trash_topic="trash",
                         hop_limit=100, stop=threading.Event(), **options)


def _variants() -> dict[str, Callable[[], NodeProcessor]]:
    from opentelemetry.sdk.trace import TracerProvider

    return {
        "plain": _processor,
        "metrics": lambda: _processor(stats=Metrics().node("bench", "pass")),
        "tracing": lambda: _processor(tracing=otel_tracing()),
        "tracing-sdk": lambda: _processor(tracing=OtelTracing(TracerProvider())),
    }


def _latest_per_message_us() -> float | None:
    path = RESULTS_DIR / "passthrough-observe.json"
    if not path.exists():
        return None
    median = json.loads(path.read_text())["median"].get("kstream-bytes")
    return None if median is None else median["cpu_s_per_100k"] * 10  # s per 100k -> us per message


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.observe_cost", description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=40, help="rounds; the best of each variant is kept (default 40)")
    ap.add_argument("--per-message-us", type=float, default=None,
                    help="CPU us of one pass-through message end to end (default: latest passthrough-observe.json)")
    add_tree_args(ap)
    args = ap.parse_args(argv)
    tree = check_tree(args.allow_dirty)
    per_message = args.per_message_us or _latest_per_message_us()
    load_before = os.getloadavg()
    records = [_Record(i, int(time.time() * 1000)) for i in range(1000)]
    handlers = {name: make().handle for name, make in _variants().items()}
    best = dict.fromkeys(handlers, float("inf"))
    every_round: dict[str, list[float]] = {name: [] for name in handlers}
    for _ in range(args.rounds):
        for name, handle in handlers.items():
            repeat = 1 if name == "tracing-sdk" else 10  # the SDK is ~20x slower: keep rounds short
            started = time.process_time()
            for _ in range(repeat):
                for rec in records:
                    handle(rec)
            us = (time.process_time() - started) / (repeat * len(records)) * 1e6
            every_round[name].append(round(us, 3))
            best[name] = min(best[name], us)
    added = {name: best[name] - best["plain"] for name in best if name != "plain"}
    print(f"processor CPU per message, best of {args.rounds} rounds:")
    for name, us in best.items():
        extra = "" if name == "plain" else f"  (+{added[name]:.2f} us"
        if extra and per_message:
            extra += f", {100 * added[name] / per_message:.1f} % of a {per_message:.1f} us pass-through message"
        print(f"  {name:<12} {us:6.2f} us{extra}{')' if extra else ''}")
    path = write_json("observe-cost", tree=tree, data={
        "benchmark": "observe_cost",
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "config": {
            "rounds": args.rounds, "records_per_round": 1000, "python": platform.python_version(),
            "cpus": os.cpu_count(), "loadavg_before": [round(x, 2) for x in load_before],
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
            "measured": "time.process_time of NodeProcessor.handle over the records; best round per variant",
        },
        "best_us": {k: round(v, 3) for k, v in best.items()},
        "added_us": {k: round(v, 3) for k, v in added.items()},
        "pass_through_message_us": per_message,
        "added_share": {k: round(v / per_message, 4) for k, v in added.items()} if per_message else None,
        "rounds_us": every_round,
    })  # fmt: skip
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
