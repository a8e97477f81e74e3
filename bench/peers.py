"""Peers: raw confluent-kafka, kstream (at-least-once and exactly-once), Quix Streams and faust,
each a pass-through process on the same broker and the same input, one after another.

    .venv/bin/python bench/peers.py [--messages 1000000] [--partitions 6] [--repeat 3]

Every contender is its own process, so its CPU time and peak RSS are its own (read from
``/proc``). Quix Streams and faust-streaming run from their own venvs (``bench/.venv-quix``,
``bench/.venv-faust``), created from PyPI on first use. Writes ``bench/results/peers.json``.
See bench/README.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from bench.common import (
    BENCH_DIR,
    BenchError,
    ProcessContender,
    ProcessFactory,
    broker,
    delete_topics,
    kstream_run,
    machine,
    package_versions,
    peer_venv,
    run_process_rounds,
    summary,
    table,
    versions,
    write_json,
)
from bench.peers.kstream_app import env_for

QUIX_REQUIREMENTS = ["quixstreams", "psutil"]
FAUST_REQUIREMENTS = ["faust-streaming", "psutil"]
KSTREAM_APP = "bench/peers/kstream_app.py:topology"
TARGETS = {"kstream-alo/raw": 0.6, "kstream-alo/quix": 1.5, "kstream-alo/faust": 5.0, "kstream-eos/kstream-alo": 0.7}


def raw(bootstrap: str, source: str, output: str, tag: str) -> ProcessContender:
    return ProcessContender(f"peers-raw-{tag}", [sys.executable, "-m", "bench.peers.raw_loop", bootstrap, source, output])


def kstream(processing: str) -> ProcessFactory:
    def factory(bootstrap: str, source: str, output: str, tag: str) -> ProcessContender:
        short = "alo" if processing == "at_least_once" else "eos"
        return kstream_run(f"peers-kstream-{short}-{tag}", KSTREAM_APP, bootstrap=bootstrap, namespace=f"bench{tag}{short}",
                           env=env_for(source, output, processing=processing))
    return factory


def quix(bootstrap: str, source: str, output: str, tag: str) -> ProcessContender:
    python = peer_venv("quix", QUIX_REQUIREMENTS)
    return ProcessContender(f"peers-quix-{tag}", [str(python), str(BENCH_DIR / "peers" / "quix_app.py"), bootstrap, source,
                                                  output, f"bench-quix-{tag}"])


def faust(bootstrap: str, source: str, output: str, tag: str) -> ProcessContender:
    python = peer_venv("faust", FAUST_REQUIREMENTS)
    return ProcessContender(f"peers-faust-{tag}", [str(python), str(BENCH_DIR / "peers" / "faust_app.py"), bootstrap, source,
                                                   output, f"bench-faust-{tag}"])


CONTENDERS: dict[str, ProcessFactory] = {
    "raw": raw,
    "kstream-alo": kstream("at_least_once"),
    "kstream-eos": kstream("exactly_once"),
    "quix": quix,
    "faust": faust,
}


def peer_versions() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, reqs, extra in (("quix", QUIX_REQUIREMENTS, ["confluent-kafka"]),
                              ("faust", FAUST_REQUIREMENTS, ["aiokafka", "mode-streaming"])):
        python = BENCH_DIR / f".venv-{name}" / "bin" / "python"
        if python.exists():
            out[name] = package_versions(python, [reqs[0], *extra])
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python bench/peers.py", description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=1_000_000, help="input messages (default 1000000)")
    ap.add_argument("--partitions", type=int, default=6, help="partitions of every topic (default 6)")
    ap.add_argument("--repeat", type=int, default=3, help="rounds; who goes first rotates, medians reported (default 3)")
    ap.add_argument("--warmup", type=int, default=20_000, help="messages of the unrecorded warm-up round (0: none)")
    ap.add_argument("--faust-messages", type=int, default=100_000,
                    help="faust reads only the first N records of the same data (default 100000; 0: all)")
    ap.add_argument("--contenders", default=",".join(CONTENDERS), help="comma-separated subset of " + ", ".join(CONTENDERS))
    args = ap.parse_args(argv)
    names = [n.strip() for n in args.contenders.split(",") if n.strip()]
    unknown = [n for n in names if n not in CONTENDERS]
    if unknown or not names:
        ap.error(f"unknown contender(s) {unknown}; choose from {', '.join(CONTENDERS)}")
    if "quix" in names:
        peer_venv("quix", QUIX_REQUIREMENTS)
    if "faust" in names:
        peer_venv("faust", FAUST_REQUIREMENTS)
    limits = {"faust": args.faust_messages} if args.faust_messages else {}

    run_id = uuid.uuid4().hex[:6]
    machine_before = machine()
    created: list[str] = []
    with broker() as handle:
        try:
            print(f"broker {handle.bootstrap}; {args.messages:,} messages x {args.partitions} partitions, "
                  f"{args.repeat} round(s), contenders {', '.join(names)}; load {machine_before['loadavg']}", flush=True)
            rounds = run_process_rounds(
                handle, {n: CONTENDERS[n] for n in names}, run_id=run_id, prefix="bench.peers", messages=args.messages,
                partitions=args.partitions, repeat=args.repeat, warmup=args.warmup, created=created, limits=limits,
            )  # fmt: skip
            vers = versions(handle)
        except BenchError as exc:
            print(f"benchmark broke: {exc}", file=sys.stderr)
            return 1
        finally:
            if handle.pid is None:
                delete_topics(handle.bootstrap, created)

    medians = {n: summary(rounds.runs[n]) for n in names}
    base = {"raw": "raw", "quix": "quix", "faust": "faust", "kstream-alo": "kstream-alo"}
    ratios: dict[str, float] = {}
    for n in names:
        for b in base:
            if b in medians and n != b and (n.startswith("kstream") or b == "raw"):
                ratios[f"{n}/{b}"] = medians[n]["msgs_per_s"] / medians[b]["msgs_per_s"]
    round_ratios = {
        key: [round(a.msgs_per_s / b.msgs_per_s, 3) for a, b in zip(rounds.runs[key.split("/")[0]], rounds.runs[key.split("/")[1]],
                                                                    strict=True)]
        for key in ratios
    }
    rows = []
    for n in names:
        med = medians[n]
        vs_raw = "" if n == "raw" or "raw" not in medians else f"{ratios[f'{n}/raw']:.2f}"
        bcpu = med["broker_cpu_s_per_100k"]
        rows.append([
            n, f"{med['messages']:,}", f"{med['msgs_per_s']:,.0f}", vs_raw, f"{med['cpu_s_per_100k']:.2f}",
            "n/a" if bcpu is None else f"{bcpu:.2f}", f"{med['peak_rss_mb']:.0f}",
            " ".join(f"{v:,}" for v in med["all_msgs_per_s"]),
        ])  # fmt: skip
    print()
    print(table(["contender", "messages", "msgs/s", "vs raw", "CPU s/100k", "broker CPU s/100k", "peak RSS MB", "all rounds"], rows))
    verdicts = {}
    for key, target in TARGETS.items():
        if key in ratios:
            verdicts[key] = {"ratio": ratios[key], "target": target, "met": ratios[key] >= target, "per_round": round_ratios[key]}
            print(f"{key} = {ratios[key]:.2f} (target >= {target}): {'met' if ratios[key] >= target else 'NOT met'}; "
                  f"per round {', '.join(f'{r:.2f}' for r in round_ratios[key])}")
    path = write_json("peers", {
        "benchmark": "peers",
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "config": {
            "messages": args.messages, "partitions": args.partitions, "repeat": args.repeat, "warmup": args.warmup,
            "limits": limits, "inputs": rounds.inputs,
            "broker": "external" if handle.pid is None else "local (started by the benchmark)",
            "measured": "steady part: output count from 5% to 100% of the contender's input (high watermarks every 50 ms); "
                        "CPU and peak RSS (VmHWM) of the contender's process",
        },
        "machine_before": machine_before, "machine_after": machine(),
        "versions": {**vers, "peers": peer_versions()},
        "median": medians, "ratios": ratios, "round_ratios": round_ratios, "targets": verdicts,
        "exit_codes": rounds.exit_codes,
        "runs": [m.as_dict() for n in names for m in rounds.runs[n]],
        "logs": str(Path(os.path.relpath(BENCH_DIR / "results" / "logs", BENCH_DIR.parent))),
    })  # fmt: skip
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
