"""Exactly-once through broker crashes, repeated: the stress form of tests/integration/test_broker_crash.py.

    .venv/bin/python -m bench.broker_crash [--rounds 10] [--records 30000] [--down 5] [--rate 0]
        [--transaction-early SECONDS] [--allow-dirty]

Each round starts its own broker (a fresh data dir), runs the exactly-once 3-node chain
(tests/apps/chain.py) over ``--records`` keyed records on 6 partitions under a supervisor that
restarts the worker process if it exits, SIGKILLs the broker mid-stream, restarts it on the
same data dir ``--down`` seconds later, then checks with read_committed readers: 0 lost,
0 duplicated, per-key order kept, and no partition whose last stable offset stays behind its
high watermark (a hanging transaction). Not a speed figure: a count of rounds that kept every
invariant. ``--rate N`` feeds the records at N per second while the chain runs (a stream
that is not saturated) instead of writing them all first (a backlog); ``--transaction-early``
runs the workers with ``runtime.transaction_early`` set. Writes ``bench/results/broker_crash.json`` with every round, the versions, the
commit and the load before and after. Refuses a dirty tree unless ``--allow-dirty`` (marked).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from bench.common import REPO, machine, versions, write_json
from bench.results import add_tree_args, check_tree
from tests.integration.crash_scenario import run_once


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.broker_crash", description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--records", type=int, default=30_000)
    ap.add_argument("--down", type=float, default=5.0, help="seconds the broker stays down")
    ap.add_argument("--rate", type=float, default=0.0,
                    help="records per second fed while the chain runs (0: all written before it starts)")
    ap.add_argument("--transaction-early", type=float, default=None,
                    help="the workers' runtime.transaction_early (default: the setting's default)")
    add_tree_args(ap)
    ap.add_argument("--name", default="broker_crash", help="results file name (bench/results/NAME.json)")
    ap.add_argument("--label", default="", help="what this run measures, kept in the results (e.g. a baseline)")
    args = ap.parse_args(argv)
    tree = check_tree(args.allow_dirty)
    started = {"machine": machine(), "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    rounds = []
    for i in range(args.rounds):
        with tempfile.TemporaryDirectory(prefix="kstream-crash-") as tmp:
            runtime = {} if args.transaction_early is None else {"transaction_early": args.transaction_early}
            outcome = run_once(Path(tmp), records=args.records, down=args.down, kill_after=args.records // 4,
                               rate=args.rate, runtime=runtime)
            rounds.append(outcome.as_dict())
            print(f"round {i + 1}/{args.rounds}: {'ok' if outcome.ok else 'FAILED'} {outcome.as_dict()}", flush=True)
            if not outcome.ok:
                log = Path(tmp) / "worker.log"
                keep = REPO / "bench" / "results" / "logs" / f"{args.name}-round{i + 1}.log"
                keep.parent.mkdir(parents=True, exist_ok=True)
                keep.write_text(log.read_text()[-200_000:] if log.exists() else "")
    ok = sum(1 for r in rounds if r["ok"])
    data = {
        "benchmark": "broker_crash", "label": args.label, "dirty_tree": tree.dirty,
        "dirty_files": tree.dirty_files, "versions": versions(),
        "before": started, "after": {"machine": machine()},
        "params": {"rounds": args.rounds, "records": args.records, "down_s": args.down, "partitions": 6,
                   "rate": args.rate, "transaction_early": args.transaction_early},
        "rounds": rounds, "rounds_ok": ok,
        "verdict": "met" if ok == args.rounds else f"not met: {args.rounds - ok} of {args.rounds} rounds broke an invariant",
    }
    path = write_json(args.name, data, tree=tree)
    print(f"{ok}/{args.rounds} rounds kept every invariant -> {path}")
    return 0 if ok == args.rounds else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
