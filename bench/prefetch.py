"""Prefetch N on an I/O-bound node: prefetch 20 vs prefetch 1, and per-key order kept.

    .venv/bin/python -m bench.prefetch [--messages 2000] [--keys 200] [--sleep-ms 10]

One input partition holds ``--messages`` JSON records over ``--keys`` keys (key ``k{i % keys}``,
value ``{"key", "seq"}``, seq counting per key). A ``kstream run`` node whose async handler
awaits ``--sleep-ms`` per message passes each value on to a one-partition output topic; it runs
once with prefetch 20 and once with prefetch 1 (fresh groups, same input). Throughput is
timed on the output's high watermark as in the other benchmarks (steady part, 5% to 100%).
Then the prefetch-20 output is read back: every key's seqs must come out in input order.
Target: ratio >= 15. Writes ``bench/results/prefetch.json``.
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from typing import Any

import orjson
from confluent_kafka import Producer

from bench.common import (
    BenchError,
    broker,
    create_topics,
    kstream_run,
    machine,
    read_all,
    run_contender,
    versions,
    write_json,
)
from bench.peers.kstream_app import env_for
from bench.results import add_tree_args, check_tree

APP = "bench/peers/kstream_app.py:topology"
TARGET_RATIO = 15.0


def fill(bootstrap: str, topic: str, messages: int, keys: int) -> None:
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "enable.idempotence": True})
    for i in range(messages):
        p.produce(topic, orjson.dumps({"key": f"k{i % keys}", "seq": i // keys, "pad": "x" * 120}), f"k{i % keys}".encode())
    assert p.flush(60) == 0


def check_order(records: list[Any], messages: int, keys: int) -> dict[str, Any]:
    seqs: dict[bytes, list[int]] = {}
    for m in records:
        seqs.setdefault(m.key(), []).append(orjson.loads(m.value())["seq"])
    expected = messages // keys
    bad = [k.decode() for k, s in seqs.items() if s != sorted(s) or len(s) != len(set(s))]
    missing = sum(max(0, expected - len(set(s))) for s in seqs.values()) + max(0, keys - len(seqs)) * expected
    return {"records": len(records), "keys": len(seqs), "keys_out_of_order": bad[:10], "n_keys_out_of_order": len(bad),
            "missing": missing, "ok": not bad and missing == 0}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.prefetch", description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=2000)
    ap.add_argument("--keys", type=int, default=200)
    ap.add_argument("--sleep-ms", type=float, default=10.0)
    ap.add_argument("--prefetch", type=int, default=20)
    add_tree_args(ap)
    args = ap.parse_args(argv)
    tree = check_tree(args.allow_dirty)
    machine_before = machine()
    run_id = uuid.uuid4().hex[:6]
    runs: dict[int, Any] = {}
    order: dict[str, Any] = {}
    with broker() as handle:
        created = handle.created
        b = handle.bootstrap
        try:
            source = f"bench.prefetch.in.{run_id}"
            create_topics(b, [source], 1)
            created.append(source)
            fill(b, source, args.messages, args.keys)
            print(f"broker {b}; {args.messages:,} messages over {args.keys} keys, one partition, "
                  f"{args.sleep_ms:g} ms per message; load {machine_before['loadavg']}", flush=True)
            for prefetch in (args.prefetch, 1):
                output = f"bench.prefetch.out{prefetch}.{run_id}"
                create_topics(b, [output], 1)
                created.append(output)
                proc = kstream_run(f"prefetch-{prefetch}", APP, bootstrap=b, namespace=f"benchpf{prefetch}{run_id}",
                                   env=env_for(source, output, prefetch=prefetch, sleep_ms=args.sleep_ms))
                m = run_contender(f"prefetch-{prefetch}", proc, bootstrap=b, output=output, partitions=1,
                                  expected=args.messages, broker_pid=handle.pid, cpu=proc.cpu, peak_rss=proc.peak_rss)
                runs[prefetch] = m
                print(f"  prefetch {prefetch:>3}: {m.msgs_per_s:8,.0f} msgs/s (steady {m.steady_s:.2f} s, "
                      f"ideal {1000 / args.sleep_ms * prefetch:,.0f} msgs/s)", flush=True)
                if prefetch == args.prefetch:
                    order = check_order(read_all(b, output, args.messages, timeout=60), args.messages, args.keys)
            vers = versions(handle)
        except BenchError as exc:
            print(f"benchmark broke: {exc}", file=sys.stderr)
            return 1
    ratio = runs[args.prefetch].msgs_per_s / runs[1].msgs_per_s
    ok = ratio >= TARGET_RATIO
    print(f"prefetch {args.prefetch} / prefetch 1 = {ratio:.1f}x (target >= {TARGET_RATIO:g}): {'met' if ok else 'NOT met'}")
    print(f"per-key order of the prefetch-{args.prefetch} output: {'kept' if order['ok'] else 'BROKEN'} "
          f"({order['records']:,} records, {order['keys']} keys, {order['n_keys_out_of_order']} out of order, "
          f"{order['missing']} missing)")
    path = write_json("prefetch", tree=tree, data={
        "benchmark": "prefetch", "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "config": {"messages": args.messages, "keys": args.keys, "sleep_ms": args.sleep_ms, "prefetch": args.prefetch,
                   "partitions": 1, "handler": "async, await asyncio.sleep(sleep_ms), bytes pass-through"},
        "machine_before": machine_before, "machine_after": machine(), "versions": vers,
        "runs": {str(k): v.as_dict() for k, v in runs.items()}, "ratio": ratio, "target_ratio": TARGET_RATIO, "met": ok,
        "order": order,
    })  # fmt: skip
    print(f"results: {path}")
    return 0 if order.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
