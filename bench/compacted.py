"""Compacted-topic state at scale: the Trash and the cursors topic when they are large (issue 9.9).

Question: how long do ``kstream trash list --node X``, ``kstream trash show ID`` and the start of
a batch run take with 100,000 Trash entries and 10,000 cursor scopes, on the code before the
change (``--baseline REV``, extracted with ``git archive``) and on this tree?

Data (written once per run, shared by both codes): ``--entries`` Trash entries spread over 100
nodes of topology ``big`` (so ``--node n0`` matches 1%), each with a ~200 B payload and a short
traceback; ``--scopes`` completed cursor scopes of the batch node ``bench/fetch``. Both topics
compacted, 6 partitions. Nothing is compacted away during the run (no duplicates were written).

Measured, per round and per code, each in a fresh subprocess (``PYTHONPATH`` = that code):

- ``list_s``: wall time of ``python -m kstream.cli.main trash list --node n0`` (output checked).
- ``show_s``: wall time of ``trash show ID`` for one entry of ``n0`` (output checked).
- ``first_run_s``: a batch worker for ``bench/fetch`` is built and started with an entry
  message already waiting: seconds until its handler is called (process start-up excluded;
  group join, topic reads included).
- ``next_run_s``: then, per run, one entry message for an existing scope is produced: seconds
  from the produce call to the handler call (the median of ``--runs`` runs, all kept).

Rounds alternate the two codes so both see the same machine load. Results: every round, the
commits, versions and load go to ``bench/results/compacted.json``.

    .venv/bin/python -m bench.compacted --baseline 67c86b4          # full size, 3 rounds
    .venv/bin/python -m bench.compacted --entries 10000 --scopes 1000 --rounds 1   # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

NODES = 100


def _probe_batch(bootstrap: str, namespace: str, scopes: int, runs: int) -> dict[str, Any]:
    """Runs in a subprocess with the code under test first on ``sys.path``."""
    import threading

    from confluent_kafka import Producer

    import kstream
    from kstream import Context, Page, Topology
    from kstream.app import build_worker, run_workers
    from kstream.config import Settings

    calls: dict[bytes, float] = {}
    called = threading.Condition()
    topology = Topology("bench")

    @topology.batch("fetch", to=f"{namespace}.bench.out")
    def fetch(cursor: Any, ctx: Context) -> Page:
        with called:
            calls.setdefault(ctx.key or b"", time.monotonic())
            called.notify_all()
        return Page(items=[], cursor=None)

    def wait_for(scope: bytes) -> float:
        with called:
            if not called.wait_for(lambda: scope in calls, timeout=120):
                raise RuntimeError(f"the handler was not called for scope {scope!r} within 120 s")
            return calls[scope]

    producer = Producer({"bootstrap.servers": bootstrap})
    topic = f"{namespace}.bench.fetch"
    warm = f"warm-{uuid.uuid4().hex[:8]}".encode()
    producer.produce(topic, b"{}", warm)
    producer.flush(30)
    settings = Settings(bootstrap_servers=bootstrap, namespace=namespace)
    stop = threading.Event()
    started = time.monotonic()
    worker = build_worker(topology, "fetch", settings, stop)
    thread = threading.Thread(target=run_workers, args=([worker], stop), daemon=True)
    thread.start()
    try:
        first = wait_for(warm) - started
        nexts = []
        for i in range(runs):
            scope = f"scope-{(i * 997) % scopes:05d}".encode()
            sent = time.monotonic()
            producer.produce(topic, b"{}", scope)
            producer.flush(30)
            nexts.append(wait_for(scope) - sent)
    finally:
        stop.set()
        thread.join(60)
    return {"first_run_s": first, "next_run_s": statistics.median(nexts), "next_runs_s": nexts,
            "kstream_file": kstream.__file__}


def _seed(bootstrap: str, namespace: str, entries: int, scopes: int) -> str:
    """Writes the Trash entries and cursor scopes; returns the id of one entry of node ``n0``."""
    from datetime import UTC, datetime, timedelta

    import orjson
    from confluent_kafka import Producer

    from kstream.batch import CursorCodec, CursorState
    from kstream.trash import Attempt, TrashCodec, TrashEntry, entry_id

    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 50, "batch.size": 1_000_000,
                         "queue.buffering.max.messages": 500_000})

    def put(topic: str, value: bytes, key: bytes) -> None:
        while True:
            try:
                producer.produce(topic, value, key)
                return
            except BufferError:
                producer.poll(0.05)

    codec, now, probe = TrashCodec(), datetime.now(UTC), ""
    for i in range(entries):
        node, when = f"n{i % NODES}", now - timedelta(seconds=entries - i)
        eid = entry_id("big", node, "shop.orders", i % 6, i)
        entry = TrashEntry(
            id=eid, topology="big", node=node, reason="error", error_type="ValueError",
            error_message=f"amount {i} is not a number", traceback="Traceback (most recent call last):\n"
            f'  File "app.py", line {i % 300}, in {node}\nValueError: amount {i} is not a number\n',
            key=f"customer-{i % 5000}".encode(), value=orjson.dumps({"id": i, "customer": i % 5000, "amount": "n/a",
                                                                    "note": "lorem ipsum dolor sit amet " * 4}),
            headers=[("kstream-id", uuid.uuid4().hex.encode())], topic="shop.orders", partition=i % 6, offset=i,
            workflow=uuid.uuid4().hex, attempts=(Attempt(when, f"ValueError: amount {i} is not a number"),),
            first_failure=when, last_failure=when)
        put(f"{namespace}.trash", codec.encode(entry), eid.encode())
        if i == entries // 2 + (NODES - entries // 2 % NODES) % NODES:
            probe = eid  # an entry of n0 in the middle of the topic
    cursors = CursorCodec()
    for s in range(scopes):
        state = CursorState("bench", "fetch", f"scope-{s:05d}", last_run=uuid.uuid4().hex[:16], last_cursor=s * 100,
                            pages=3, items=300, updated=now, completed=now)
        put(f"{namespace}.cursors", cursors.encode(state), state.key.encode())
    if producer.flush(120):
        raise RuntimeError("seed records were not acknowledged within 120 s")
    return probe


def _timed(argv: list[str], env: dict[str, str], expect: str) -> float:
    started = time.monotonic()
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600, check=False)
    took = time.monotonic() - started
    if done.returncode != 0 or expect not in done.stdout:
        raise RuntimeError(f"{' '.join(argv[3:])} failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    return took


def _measure(code: Path, bootstrap: str, namespace: str, probe: str, args: argparse.Namespace) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(code)}
    cli = [sys.executable, "-m", "kstream.cli.main", "-b", bootstrap, "-n", namespace, "trash"]
    per_node = args.entries // NODES
    result: dict[str, Any] = {
        "list_s": _timed([*cli, "list", "--node", "n0"], env, f"{per_node} entries"),
        "show_s": _timed([*cli, "show", probe], env, f"id:            {probe}"),
    }
    batch = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--probe-batch", bootstrap, namespace,
                            str(args.scopes), str(args.runs)], capture_output=True, text=True, env=env, timeout=900,
                           check=False)
    if batch.returncode != 0:
        raise RuntimeError(f"batch probe failed: {batch.stderr.strip()[-800:]}")
    result.update(json.loads(batch.stdout.strip().splitlines()[-1]))
    if not str(result["kstream_file"]).startswith(str(code)):
        raise RuntimeError(f"the probe ran {result['kstream_file']}, not the code under {code}")
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--scopes", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runs", type=int, default=5, help="batch runs timed per round after the first")
    parser.add_argument("--baseline", metavar="REV", help="also measure this commit (the code before)")
    from bench.results import add_tree_args, check_tree

    add_tree_args(parser)
    args = parser.parse_args()
    tree = check_tree(args.allow_dirty)

    from bench.common import REPO, broker, create_topics, delete_topics, machine, versions, write_json

    def git(*argv: str) -> str:
        return subprocess.run(["git", *argv], capture_output=True, text=True, cwd=REPO, check=True).stdout.strip()

    with tempfile.TemporaryDirectory(prefix="kstream-compacted-") as tmp, broker() as handle:
        codes: list[tuple[str, Path, str]] = []
        if args.baseline:
            base = Path(tmp) / "baseline"
            base.mkdir()
            archive = subprocess.run(["git", "archive", args.baseline], capture_output=True, cwd=REPO, check=True)
            subprocess.run(["tar", "-x", "-C", str(base)], input=archive.stdout, check=True)
            codes.append(("before", base, git("rev-parse", args.baseline)))
        codes.append(("after", REPO, git("rev-parse", "HEAD")))
        namespace = f"cbench{uuid.uuid4().hex[:8]}"
        topics = [f"{namespace}.trash", f"{namespace}.cursors"]
        create_topics(handle.bootstrap, topics, 6, {"cleanup.policy": "compact"})
        create_topics(handle.bootstrap, [f"{namespace}.bench.fetch", f"{namespace}.bench.out"], 6)
        load_before = machine()
        seeded = time.monotonic()
        probe = _seed(handle.bootstrap, namespace, args.entries, args.scopes)
        print(f"seeded {args.entries} trash entries and {args.scopes} cursor scopes in "
              f"{time.monotonic() - seeded:.1f} s", flush=True)
        rounds = []
        for r in range(args.rounds):
            for label, code, sha in codes:
                m = _measure(code, handle.bootstrap, namespace, probe, args)
                rounds.append({"round": r + 1, "code": label, "commit": sha, **m, "loadavg": machine()["loadavg"]})
                print(f"round {r + 1} {label:<6} list {m['list_s']:.2f} s  show {m['show_s']:.2f} s  "
                      f"first run {m['first_run_s']:.2f} s  next run {m['next_run_s']:.3f} s", flush=True)
        vers = versions(handle)
        if os.environ.get("KSTREAM_BENCH_BOOTSTRAP"):
            delete_topics(handle.bootstrap, [*topics, f"{namespace}.bench.fetch", f"{namespace}.bench.out"])

    def median(label: str, field: str) -> float | None:
        values = [r[field] for r in rounds if r["code"] == label]
        return round(statistics.median(values), 3) if values else None

    fields = ("list_s", "show_s", "first_run_s", "next_run_s")
    summary = {label: {f: median(label, f) for f in fields} for label, _, _ in codes}
    data = {
        "benchmark": "compacted", "versions": vers, "commits": {label: sha for label, _, sha in codes},
        "params": {"entries": args.entries, "scopes": args.scopes, "nodes": NODES, "partitions": 6,
                   "rounds": args.rounds, "runs": args.runs},
        "machine": {"before": load_before, "after": machine()}, "median": summary, "rounds": rounds,
    }
    path = write_json("compacted", data, tree=tree)
    for label, values in summary.items():
        print(f"median {label:<6} " + "  ".join(f"{k} {v}" for k, v in values.items()))
    print(f"-> {path}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--probe-batch":
        sys.path.remove(str(Path(__file__).resolve().parent))  # `bench/` must not shadow anything
        print(json.dumps(_probe_batch(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))))
        sys.exit(0)
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
