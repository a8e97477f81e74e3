"""Memory of a kstream worker process: flat over millions of messages, bounded behind a backlog.

    .venv/bin/python -m bench.memory [--messages 5000000] [--backlog 1000000]

Part 1, *steady*: a ``kstream run`` pass-through node (bytes) processes ``--messages`` records;
its RSS (``VmRSS``) is read every 0.25 s. The RSS of a busy worker swings by about 25 MB within
a second (fetch and produce buffers allocated and given back), so a single reading lands
anywhere in that swing. The growth is therefore measured over two windows of ``--first``
(1,000,000) messages each: the second million (from ``--first`` to twice that) and the last
million. For each window the peak (highest reading) and the floor (lowest) are kept; a round's
growth is the larger of peak growth and floor growth, last window against the second one (the
first million holds the start-up). Target: growth <= 10%, on the median of ``--rounds`` (3)
rounds, each a fresh process and consumer group over the same input. The two single readings,
after ``--first`` and at the end, are recorded too (``growth_two_readings``).

Part 2, *backlog*: ``--backlog`` records wait in Kafka in front of a slow node (prefetch 20,
each message awaits ``--sleep-ms`` 1 ms; ``--sleep-kind sync`` for a blocking handler on the
thread pool). RSS when 10%, 50% and 100% of the backlog is processed: memory must stay
bounded (the worker holds at most ``runtime.buffer_size`` messages; the rest stays in Kafka).

``--malloc-arena-max N`` runs the worker with ``MALLOC_ARENA_MAX=N``; ``kstream run`` keeps a
value that is already set, so ``0`` (outside glibc's range, hence glibc's own default of 8 arenas
per core) measures the worker as it was before ``kstream run`` limited the arenas to 2.

Writes the steady part to ``bench/results/NAME.json`` and the backlog part to
``bench/results/NAME-backlog.json`` (``--name``, default ``memory``), each with the commit,
versions, machine and load before and after.

    .venv/bin/python -m bench.memory --backlog 0 --malloc-arena-max 0 --name memory-no-arena-limit
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.contenders import kstream_run
from bench.harness import BenchError, WatermarkCounter, broker, create_topics, produce_input
from bench.peers.kstream_app import env_for
from bench.procstats import ProcessContender, proc_status_kb
from bench.results import add_tree_args, check_tree, machine, verdict, verdict_text, versions, write_json

APP = "bench/peers/kstream_app.py:topology"
TARGET_GROWTH = 0.10


def watch(proc: ProcessContender, bootstrap: str, output: str, partitions: int, marks: list[int], *,
          windows: Sequence[tuple[int, int]] = (), stall_timeout: float = 120.0) -> dict[str, Any]:
    """Run ``proc`` until ``output`` holds ``marks[-1]`` records; RSS at each mark (and a trace).

    ``windows``: output counts ``[lo, hi)`` (``hi`` included for the last mark); the lowest and
    highest RSS read while the count was in each, from every reading (the trace is thinned)."""
    counter = WatermarkCounter(bootstrap, output, partitions)
    stop = threading.Event()
    errors: list[BaseException] = []

    def target() -> None:
        try:
            proc(stop)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    t0 = time.perf_counter()
    thread.start()
    at: dict[int, dict[str, float]] = {}
    trace: list[tuple[float, int, float]] = []
    pending = list(marks)
    last_change, last = t0, -1
    try:
        while pending:
            time.sleep(0.25)
            count = counter.count()
            kb = proc_status_kb(proc.pid, "VmRSS")
            now = time.perf_counter()
            if kb is not None:
                trace.append((round(now - t0, 2), count, kb / 1024))
            while pending and count >= pending[0] and kb is not None:
                at[pending.pop(0)] = {"rss_mb": kb / 1024, "seconds": now - t0, "count": count, "cpu_s": proc.cpu()}
            if errors:
                raise BenchError(f"{proc.name} failed: {errors[0]}")
            if count != last:
                last_change, last = now, count
            elif now - last_change > stall_timeout:
                raise BenchError(f"{proc.name} stalled at {count} for {stall_timeout:g} s")
    finally:
        hwm = proc.peak_rss()
        stop.set()
        thread.join(90)
        counter.close()
    step = max(1, len(trace) // 200)
    return {"at": at, "peak_rss_mb": None if hwm is None else hwm / 2**20, "trace": trace[::step],
            "windows": [rss_window(trace, lo, hi, last=hi >= marks[-1]) for lo, hi in windows]}


def rss_window(trace: Sequence[tuple[float, int, float]], lo: int, hi: int, *, last: bool) -> dict[str, Any]:
    """Lowest and highest RSS (MB) of the readings taken while the output count was in ``[lo, hi)``
    (``[lo, hi]`` for the ``last`` window)."""
    rss = [mb for _, count, mb in trace if lo <= count < hi or (last and count == hi)]
    if not rss:
        raise BenchError(f"no RSS reading while the output count was between {lo:,} and {hi:,}")
    return {"from": lo, "to": hi, "readings": len(rss), "floor_mb": min(rss), "peak_mb": max(rss)}


def window_growth(second: dict[str, Any], last: dict[str, Any]) -> dict[str, float]:
    """Peak and floor growth of the ``last`` window over the ``second``; ``growth`` is the larger."""
    peak = last["peak_mb"] / second["peak_mb"] - 1
    floor = last["floor_mb"] / second["floor_mb"] - 1
    return {"peak_growth": peak, "floor_growth": floor, "growth": max(peak, floor)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=5_000_000, help="steady part: messages (default 5000000; 0: skip)")
    ap.add_argument("--first", type=int, default=1_000_000, help="steady part: the first RSS reading (default 1000000)")
    ap.add_argument("--backlog", type=int, default=1_000_000, help="backlog part: messages (default 1000000; 0: skip)")
    ap.add_argument("--prefetch", type=int, default=20)
    ap.add_argument("--sleep-ms", type=float, default=1.0)
    ap.add_argument("--sleep-kind", choices=["async", "sync"], default="async")
    ap.add_argument("--partitions", type=int, default=6)
    ap.add_argument("--rounds", type=int, default=3, help="steady part: rounds over the same input (default 3)")
    ap.add_argument("--runtime", action="append", default=[], metavar="KEY=VALUE",
                    help="backlog part: a [runtime] setting of the worker, e.g. buffer_size=5000 (repeatable)")
    ap.add_argument("--malloc-arena-max", metavar="N",
                    help="run the worker with MALLOC_ARENA_MAX=N (default: what kstream run sets, 2; 0: glibc's default)")
    ap.add_argument("--name", default="memory", help="results: NAME.json (steady), NAME-backlog.json (default memory)")
    add_tree_args(ap)
    args = ap.parse_args(argv)
    tree = check_tree(args.allow_dirty)
    arena_env = {} if args.malloc_arena_max is None else {"MALLOC_ARENA_MAX": args.malloc_arena_max}
    machine_before = machine()
    result: dict[str, Any] = {}
    machine_between: dict[str, Any] | None = None
    run_id = uuid.uuid4().hex[:6]
    with broker() as handle:
        created = handle.created
        b = handle.bootstrap
        try:
            print(f"broker {b}; load {machine_before['loadavg']}", flush=True)
            if args.messages:
                source = f"bench.mem.in.{run_id}"
                create_topics(b, [source], args.partitions)
                created.append(source)
                started = time.perf_counter()
                produce_input(b, source, args.messages)
                print(f"steady: {args.messages:,} input records written in {time.perf_counter() - started:.0f} s", flush=True)
                first = min(args.first, args.messages)
                if args.messages < 3 * first:
                    raise BenchError(f"--messages must be at least three times --first ({first:,}): the growth "
                                     "compares the second window of --first messages with the last one")
                windows = [(first, 2 * first), (args.messages - first, args.messages)]
                rounds = []
                for r in range(args.rounds):  # each round: a fresh process and group over the same input
                    output = f"bench.mem.out.{run_id}.r{r}"
                    create_topics(b, [output], args.partitions)
                    created.append(output)
                    proc = kstream_run(f"memory-steady-r{r}", APP, bootstrap=b, namespace=f"benchmem{run_id}r{r}",
                                       env={**env_for(source, output), **arena_env})
                    w = watch(proc, b, output, args.partitions, [first, args.messages], windows=windows)
                    r1, r2 = w["at"][first]["rss_mb"], w["at"][args.messages]["rss_mb"]
                    span = w["at"][args.messages]["seconds"] - w["at"][first]["seconds"]
                    second, last = w["windows"]
                    g = window_growth(second, last)
                    rounds.append({**w, **g, "rss_first_mb": r1, "rss_last_mb": r2, "growth_two_readings": r2 / r1 - 1,
                                   "msgs_per_s_between": (args.messages - first) / span if span > 0 else None,
                                   "loadavg_after": machine()["loadavg"]})
                    print(f"steady round {r + 1}: RSS floor/peak {second['floor_mb']:.1f}/{second['peak_mb']:.1f} MB "
                          f"over messages {first:,}-{2 * first:,}, {last['floor_mb']:.1f}/{last['peak_mb']:.1f} MB over "
                          f"the last {first:,}: growth {g['growth']:+.1%} (floor {g['floor_growth']:+.1%}, peak "
                          f"{g['peak_growth']:+.1%}); single readings {r1:.1f} -> {r2:.1f} MB "
                          f"({r2 / r1 - 1:+.1%}); peak {w['peak_rss_mb']:.1f} MB", flush=True)
                v = verdict([x["growth"] for x in rounds], TARGET_GROWTH, at_least=False)
                result["steady"] = {"messages": args.messages, "first": first, "rounds": rounds,
                                    "growth_measure": "larger of peak and floor growth, last window of --first messages "
                                                      "over the second",
                                    "window_floor_mb": [statistics.median(x["windows"][i]["floor_mb"] for x in rounds)
                                                        for i in (0, 1)],
                                    "window_peak_mb": [statistics.median(x["windows"][i]["peak_mb"] for x in rounds)
                                                       for i in (0, 1)],
                                    "rss_first_mb": statistics.median(x["rss_first_mb"] for x in rounds),
                                    "rss_last_mb": statistics.median(x["rss_last_mb"] for x in rounds),
                                    "peak_rss_mb": max((x["peak_rss_mb"] or 0.0) for x in rounds) or None,
                                    "growth": v["median"], "target_growth": TARGET_GROWTH, "met": v["met"], "verdict": v}
                print(f"steady: growth {verdict_text(v, '+.1%')}", flush=True)
                machine_between = machine()
            if args.backlog:
                source, output = f"bench.mem.backlog.{run_id}", f"bench.mem.backlog.out.{run_id}"
                create_topics(b, [source, output], args.partitions)
                created += [source, output]
                produce_input(b, source, args.backlog)
                print(f"backlog: {args.backlog:,} records wait; node prefetch {args.prefetch}, {args.sleep_kind} "
                      f"{args.sleep_ms:g} ms per message", flush=True)
                config = None
                runtime = dict(item.split("=", 1) for item in args.runtime)
                if runtime:
                    config = Path(tempfile.mkstemp(prefix="bench-mem-", suffix=".toml")[1])
                    config.write_text("[runtime]\n" + "".join(f"{k} = {v}\n" for k, v in runtime.items()))
                proc = kstream_run("memory-backlog", APP, bootstrap=b, namespace=f"benchbl{run_id}", config=config,
                                   env={**env_for(source, output, prefetch=args.prefetch, sleep_ms=args.sleep_ms,
                                                  sleep_kind=args.sleep_kind), **arena_env})
                marks = [max(1, args.backlog * p // 100) for p in (10, 50, 100)]
                w = watch(proc, b, output, args.partitions, marks)
                at = {f"{p}%": w["at"][m] for p, m in zip((10, 50, 100), marks, strict=True)}
                rss = [v["rss_mb"] for v in at.values()]
                span = at["100%"]["seconds"] - at["10%"]["seconds"]
                if config is not None:
                    config.unlink(missing_ok=True)
                result["backlog"] = {**w, "at": at, "backlog": args.backlog, "prefetch": args.prefetch, "sleep_ms": args.sleep_ms,
                                     "runtime": runtime,
                                     "sleep_kind": args.sleep_kind, "growth_10_to_100": rss[-1] / rss[0] - 1,
                                     "msgs_per_s": (marks[-1] - marks[0]) / span if span > 0 else None}
                print("backlog: RSS " + ", ".join(f"{k} {v['rss_mb']:.1f} MB" for k, v in at.items())
                      + f"; peak {w['peak_rss_mb']:.1f} MB; {result['backlog']['msgs_per_s']:,.0f} msgs/s", flush=True)
            vers = versions(handle)
        except BenchError as exc:
            print(f"benchmark broke: {exc}", file=sys.stderr)
            return 1
    machine_after = machine()
    common = {"malloc_arena_max": args.malloc_arena_max or "2 (set by kstream run)", "partitions": args.partitions}
    if "steady" in result:
        path = write_json(args.name, tree=tree, data={
            "benchmark": "memory", "part": "steady", "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "config": common,
            "machine_before": machine_before, "machine_after": machine_between or machine_after, "versions": vers,
            "steady": result["steady"]})  # fmt: skip
        print(f"results: {path}")
    if "backlog" in result:
        path = write_json(f"{args.name}-backlog", tree=tree, data={
            "benchmark": "memory", "part": "backlog", "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "config": common,
            "machine_before": machine_between or machine_before, "machine_after": machine_after, "versions": vers,
            "backlog": result["backlog"]})  # fmt: skip
        print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
