"""Throughput of the 3-node chain against one raw hop: how much a chain costs on one box.

    .venv/bin/python -m bench.chain [--messages 300000] [--partitions 6] [--repeat 3]

One input topic is filled up front (:func:`bench.common.produce_input`, records without
headers). Contenders, each reading all of it with fresh consumer groups:

* ``raw``: the hand-written consume -> produce -> commit loop of :mod:`bench.passthrough`, one hop;
* ``kstream-chain3``: three pass-through nodes ``a -> b -> c`` (``bytes``, prefetch 1) in this
  process, each its own worker thread, as ``kstream run`` runs them; b and c read records with
  kstream headers.

The figure is ``kstream-chain3`` msgs/s (at the chain's output) over ``raw`` msgs/s, per round
and the median; both run on the same box and broker, so a chain of three hops does three hops'
work (three consumes, three produces, three times the broker's traffic) for each message.
Writes ``bench/results/chain.json``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from typing import Any

from bench.common import (
    BenchError,
    Contender,
    Measurement,
    broker,
    create_topics,
    median_of,
    produce_input,
    provision_topology,
    run_contender,
    versions,
    write_json,
)
from bench.passthrough import raw
from bench.results import add_tree_args, check_tree


def chain3(bootstrap: str, source: str, output: str, partitions: int, created: list[str]) -> Contender:
    from kstream.app import build_worker, run_workers
    from kstream.config import load_settings
    from kstream.topology import Topology

    topology = Topology("bench")

    @topology.node("a", source=source)
    def a(v: bytes) -> bytes:
        return v

    @topology.node("b", after="a")
    def b(v: bytes) -> bytes:
        return v

    @topology.node("c", after="b", to=output)
    def c(v: bytes) -> bytes:
        return v

    namespace = "benchchain" + uuid.uuid4().hex[:8]
    created += provision_topology(topology, bootstrap, namespace, partitions)
    settings = load_settings(environ={}, overrides={"bootstrap_servers": bootstrap, "namespace": namespace})

    def run(stop: Any) -> None:
        workers = [build_worker(topology, name, settings, stop) for name in ("a", "b", "c")]
        if not run_workers(workers, stop):
            raise RuntimeError(f"workers ended in states {[w.state for w in workers]}")

    return run


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.chain", description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=300_000, help="input messages (default 300000)")
    ap.add_argument("--partitions", type=int, default=6)
    ap.add_argument("--repeat", type=int, default=3, help="rounds; who goes first rotates (default 3)")
    add_tree_args(ap)
    args = ap.parse_args(argv)
    tree = check_tree(args.allow_dirty)
    load_before = os.getloadavg()
    names = ["raw", "kstream-chain3"]
    runs: dict[str, list[Measurement]] = {n: [] for n in names}
    run_id = uuid.uuid4().hex[:8]
    with broker() as handle:
        created = handle.created
        try:
            source = f"bench.chain.in.{run_id}"
            create_topics(handle.bootstrap, [source], args.partitions)
            created.append(source)
            produce_input(handle.bootstrap, source, args.messages)
            print(f"broker {handle.bootstrap}; {args.messages:,} messages x {args.partitions} partitions, "
                  f"{args.repeat} round(s); load {load_before}", flush=True)
            for r in range(args.repeat):
                for name in names[r % 2:] + names[: r % 2]:
                    output = f"{source}.out.{name}.r{r}"
                    create_topics(handle.bootstrap, [output], args.partitions)
                    created.append(output)
                    contender = (raw(handle.bootstrap, source, output) if name == "raw"
                                 else chain3(handle.bootstrap, source, output, args.partitions, created))
                    m = run_contender(name, contender, bootstrap=handle.bootstrap, output=output,
                                      partitions=args.partitions, expected=args.messages, broker_pid=handle.pid)
                    runs[name].append(m)
                    print(f"  round {r + 1} {name:<15} {m.msgs_per_s:>10,.0f} msgs/s  {m.cpu_s_per_100k:.2f} CPU s/100k",
                          flush=True)
            vers = versions(handle)
        except BenchError as exc:
            print(f"benchmark broke: {exc}", file=sys.stderr)
            return 1
    medians = {n: median_of(runs[n]) for n in names}
    per_round = [round(c.msgs_per_s / r.msgs_per_s, 3) for c, r in zip(runs["kstream-chain3"], runs["raw"], strict=True)]
    ratio = medians["kstream-chain3"]["msgs_per_s"] / medians["raw"]["msgs_per_s"]
    print(f"\nkstream-chain3 / raw single hop = {ratio:.2f} (median; per round {', '.join(map(str, per_round))})")
    path = write_json("chain", tree=tree, data={
        "benchmark": "chain", "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "config": {"messages": args.messages, "partitions": args.partitions, "repeat": args.repeat,
                   "chain": "a -> b -> c, bytes pass-through, prefetch 1, worker threads in the bench process",
                   "measured": "steady part: output count from 5% to 100% of --messages (high watermarks every 50 ms)",
                   "loadavg_before": [round(x, 2) for x in load_before],
                   "loadavg_after": [round(x, 2) for x in os.getloadavg()]},
        "versions": vers, "median": medians, "ratio_chain3_over_raw_hop": ratio, "round_ratios": per_round,
        "runs": [m.as_dict() for n in names for m in runs[n]],
    })  # fmt: skip
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
