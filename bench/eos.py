"""Exactly-once vs at-least-once throughput of the same 3-node pass-through chain, in one run.

    .venv/bin/python -m bench.eos [--messages 500000] [--repeat 3]

The chain ``a -> b -> c`` (bytes pass-through, all three workers in one ``kstream run``
process) reads a filled 6-partition input and writes an output topic; once with
``Topology(..., processing="at_least_once")``, once with ``"exactly_once"`` (transactional
producers, offsets in the transaction, read_committed readers, a transaction every
``runtime.transaction_interval`` = 0.1 s by default). Each run gets a fresh namespace (its own
internal topics and groups). Timed like the other benchmarks on the output's high watermarks.
Target: EOS / ALO >= 0.7. Writes ``bench/results/eos.json``.

Transaction markers count in the high watermark: the EOS output reaches the expected count
about one marker per partition per transaction early (~0.1% here), which slightly flatters EOS.
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid

from bench.common import (
    BenchError,
    ProcessContender,
    ProcessFactory,
    broker,
    kstream_run,
    machine,
    provision_topology,
    run_process_rounds,
    summary,
    table,
    versions,
    write_json,
)
from bench.peers.kstream_app import build, env_for
from bench.results import add_tree_args, check_tree

APP = "bench/peers/kstream_app.py:topology"
TARGET_RATIO = 0.7


def chain(processing: str, partitions: int, created: list[str]) -> ProcessFactory:
    def factory(bootstrap: str, source: str, output: str, tag: str) -> ProcessContender:
        short = "alo" if processing == "at_least_once" else "eos"
        ns = f"benchchain{tag}{short}"
        created.extend(provision_topology(build(source, output, shape="chain3", processing=processing), bootstrap, ns, partitions))
        return kstream_run(f"eos-{short}-{tag}", APP, bootstrap=bootstrap, namespace=ns,
                           env=env_for(source, output, shape="chain3", processing=processing))
    return factory


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.eos", description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=500_000)
    ap.add_argument("--partitions", type=int, default=6)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=20_000)
    add_tree_args(ap)
    args = ap.parse_args(argv)
    tree = check_tree(args.allow_dirty)
    machine_before = machine()
    run_id = uuid.uuid4().hex[:6]
    with broker() as handle:
        created = handle.created
        try:
            print(f"broker {handle.bootstrap}; chain a -> b -> c, {args.messages:,} messages x {args.partitions} partitions, "
                  f"{args.repeat} round(s); load {machine_before['loadavg']}", flush=True)
            factories = {"chain-alo": chain("at_least_once", args.partitions, created),
                         "chain-eos": chain("exactly_once", args.partitions, created)}
            rounds = run_process_rounds(handle, factories, run_id=run_id, prefix="bench.eos", messages=args.messages,
                                        partitions=args.partitions, repeat=args.repeat, warmup=args.warmup, created=created)
            vers = versions(handle)
        except BenchError as exc:
            print(f"benchmark broke: {exc}", file=sys.stderr)
            return 1
    med = {n: summary(r) for n, r in rounds.runs.items()}
    ratio = med["chain-eos"]["msgs_per_s"] / med["chain-alo"]["msgs_per_s"]
    per_round = [round(e.msgs_per_s / a.msgs_per_s, 3) for e, a in zip(rounds.runs["chain-eos"], rounds.runs["chain-alo"], strict=True)]
    rows = [[n, f"{m['msgs_per_s']:,.0f}", f"{m['cpu_s_per_100k']:.2f}",
             "n/a" if m["broker_cpu_s_per_100k"] is None else f"{m['broker_cpu_s_per_100k']:.2f}", f"{m['peak_rss_mb']:.0f}",
             " ".join(f"{v:,}" for v in m["all_msgs_per_s"])] for n, m in med.items()]
    print()
    print(table(["chain", "msgs/s", "CPU s/100k", "broker CPU s/100k", "peak RSS MB", "all rounds"], rows))
    ok = ratio >= TARGET_RATIO
    print(f"\neos/alo = {ratio:.2f} (target >= {TARGET_RATIO}): {'met' if ok else 'NOT met'}; per round {per_round}")
    path = write_json("eos", tree=tree, data={
        "benchmark": "eos", "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "config": {"messages": args.messages, "partitions": args.partitions, "repeat": args.repeat, "warmup": args.warmup,
                   "chain": "a -> b -> c, bytes pass-through, one kstream run process, default settings"},
        "machine_before": machine_before, "machine_after": machine(), "versions": vers,
        "median": med, "ratio": ratio, "round_ratios": per_round, "target_ratio": TARGET_RATIO, "met": ok,
        "exit_codes": rounds.exit_codes, "runs": [m.as_dict() for r in rounds.runs.values() for m in r],
    })  # fmt: skip
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
