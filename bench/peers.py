"""Peers: raw confluent-kafka, kstream, Quix Streams and faust on the same broker and the same input,
one process each, as a pass-through and as a 3-stage chain.

    .venv/bin/python bench/peers.py [--messages 300000] [--partitions 6] [--repeat 3]

Every contender is its own process, so its CPU time and peak RSS are its own (read from
``/proc``). Quix Streams, faust-streaming and kstream on Quix's confluent-kafka run from their own
venvs (``bench/.venv-*``), created from PyPI with pinned versions on first use. Every contender
reads the same input topic. Refuses a tree with uncommitted changes unless ``--allow-dirty``.
Writes ``bench/results/peers.json``. See bench/README.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from bench.contenders import kstream_run, peer_venv
from bench.harness import BenchError, ProcessFactory, broker, create_topics, run_process_rounds
from bench.paths import BENCH_DIR, REPO
from bench.peers.kstream_app import env_for
from bench.procstats import ProcessContender
from bench.results import (
    add_tree_args,
    check_tree,
    machine,
    package_versions,
    summary,
    table,
    verdict,
    verdict_text,
    versions,
    write_json,
)

# Pinned: a figure must name what ran. quixstreams 3.28.1 requires confluent-kafka < 2.13, so Quix
# runs on 2.12.2 (librdkafka 2.12.1); kstream-alo-ck2.12 is kstream on that same client.
QUIX_CONFLUENT = "confluent-kafka==2.12.2"
QUIX_REQUIREMENTS = ["quixstreams==3.28.1", QUIX_CONFLUENT]
FAUST_REQUIREMENTS = ["faust-streaming==0.15.3", "aiokafka==0.14.0", "mode-streaming==0.7.1"]
KSTREAM_OLD_CLIENT_REQUIREMENTS = ["-e", str(REPO), QUIX_CONFLUENT]
KSTREAM_APP = "bench/peers/kstream_app.py:topology"
TARGETS = {"kstream-alo/raw": 0.6, "kstream-alo-ck2.12/quix": 1.5, "kstream-alo/faust": 5.0, "kstream-eos/kstream-alo": 0.7}
"""Pass-through targets (the ratio of msgs/s within each round; met when the median meets it)."""
REPORTED = ["kstream-alo/quix", "kstream-chain3/raw", "kstream-chain3/raw-chain3", "kstream-chain3/quix-chain3",
            "kstream-chain3/faust-chain3", "raw-chain3/raw"]
"""Ratios reported without a target."""
DEFAULT = ["raw", "kstream-alo", "kstream-eos", "kstream-alo-ck2.12", "quix", "faust",
           "raw-chain3", "kstream-chain3", "quix-chain3", "faust-chain3"]


def middle_topics(bootstrap: str, output: str, partitions: int) -> list[str]:
    """The two topics between the stages of a chain whose last stage writes ``output``."""
    names = [f"{output}.s1", f"{output}.s2"]
    create_topics(bootstrap, names, partitions)
    return names


def contenders(partitions: int) -> dict[str, ProcessFactory]:
    def raw(chain: bool) -> ProcessFactory:
        def factory(bootstrap: str, source: str, output: str, tag: str) -> ProcessContender:
            middle = middle_topics(bootstrap, output, partitions) if chain else []
            return ProcessContender(f"peers-raw{'-chain3' if chain else ''}-{tag}",
                                    [sys.executable, "-m", "bench.peers.raw_loop", bootstrap, source, output, *middle],
                                    topics=middle)
        return factory

    def kstream(short: str, *, processing: str = "at_least_once", shape: str = "pass",
                quix_client: bool = False) -> ProcessFactory:
        def factory(bootstrap: str, source: str, output: str, tag: str) -> ProcessContender:
            exe = peer_venv("kstream-ck2.12", KSTREAM_OLD_CLIENT_REQUIREMENTS) if quix_client else None
            return kstream_run(f"peers-kstream-{short}-{tag}", KSTREAM_APP, bootstrap=bootstrap,
                               namespace=f"bench{tag}{short.replace('.', '').replace('-', '')}",
                               env=env_for(source, output, processing=processing, shape=shape), python=exe)
        return factory

    def peer(name: str, requirements: list[str], chain: bool) -> ProcessFactory:
        def factory(bootstrap: str, source: str, output: str, tag: str) -> ProcessContender:
            python = peer_venv(name, requirements)
            middle = middle_topics(bootstrap, output, partitions) if chain else []
            label = f"{name}{'-chain3' if chain else ''}"
            return ProcessContender(f"peers-{label}-{tag}", [str(python), str(BENCH_DIR / "peers" / f"{name}_app.py"), bootstrap,
                                                             source, output, f"bench-{label}-{tag}", *middle], topics=middle)
        return factory

    return {
        "raw": raw(False),
        "kstream-alo": kstream("alo"),
        "kstream-eos": kstream("eos", processing="exactly_once"),
        "kstream-alo-ck2.12": kstream("alo-ck2.12", quix_client=True),
        "quix": peer("quix", QUIX_REQUIREMENTS, False),
        "faust": peer("faust", FAUST_REQUIREMENTS, False),
        "raw-chain3": raw(True),
        "kstream-chain3": kstream("chain3", shape="chain3"),
        "quix-chain3": peer("quix", QUIX_REQUIREMENTS, True),
        "faust-chain3": peer("faust", FAUST_REQUIREMENTS, True),
    }


def peer_versions(names: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for venv, packages, used in (("quix", ["quixstreams", "confluent-kafka"], "quix"),
                                 ("faust", ["faust-streaming", "aiokafka", "mode-streaming"], "faust"),
                                 ("kstream-ck2.12", ["kstream", "confluent-kafka"], "kstream-alo-ck2.12")):
        python = BENCH_DIR / f".venv-{venv}" / "bin" / "python"
        if any(n.startswith(used) for n in names) and python.exists():
            out[venv] = package_versions(python, packages)
            if "confluent-kafka" in packages:
                out[venv]["librdkafka"] = _librdkafka(python)
    return out


def _librdkafka(python: Path) -> str:
    import subprocess

    code = "import confluent_kafka; print(confluent_kafka.libversion()[0])"
    return subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python bench/peers.py", description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=300_000, help="input messages, read by every contender (default 300000)")
    ap.add_argument("--partitions", type=int, default=6, help="partitions of every topic (default 6)")
    ap.add_argument("--repeat", type=int, default=3, help="rounds; who goes first rotates, medians reported (default 3)")
    ap.add_argument("--warmup", type=int, default=20_000, help="messages of the unrecorded warm-up round (0: none)")
    ap.add_argument("--stall-timeout", type=float, default=120.0, help="a contender whose output stays still this long breaks the run")
    ap.add_argument("--contenders", default=",".join(DEFAULT), help="comma-separated subset of " + ", ".join(DEFAULT))
    add_tree_args(ap)
    args = ap.parse_args(argv)
    factories = contenders(args.partitions)
    names = [n.strip() for n in args.contenders.split(",") if n.strip()]
    unknown = [n for n in names if n not in factories]
    if unknown or not names:
        ap.error(f"unknown contender(s) {unknown}; choose from {', '.join(factories)}")
    tree = check_tree(args.allow_dirty)
    for n, (venv, reqs) in {"quix": ("quix", QUIX_REQUIREMENTS), "faust": ("faust", FAUST_REQUIREMENTS),
                            "kstream-alo-ck2.12": ("kstream-ck2.12", KSTREAM_OLD_CLIENT_REQUIREMENTS)}.items():
        if any(x == n or x == f"{n}-chain3" for x in names):
            peer_venv(venv, reqs)  # before the clock starts: a first-use install is not part of any round

    run_id = uuid.uuid4().hex[:6]
    machine_before = machine()
    with broker() as handle:
        created = handle.created
        try:
            print(f"broker {handle.bootstrap}; {args.messages:,} messages x {args.partitions} partitions, "
                  f"{args.repeat} round(s), contenders {', '.join(names)}; load {machine_before['loadavg']}", flush=True)
            rounds = run_process_rounds(
                handle, {n: factories[n] for n in names}, run_id=run_id, prefix="bench.peers", messages=args.messages,
                partitions=args.partitions, repeat=args.repeat, warmup=args.warmup, created=created,
                stall_timeout=args.stall_timeout,
            )  # fmt: skip
            vers = versions(handle)
        except BenchError as exc:
            print(f"benchmark broke: {exc}", file=sys.stderr)
            return 1

    medians = {n: summary(rounds.runs[n]) for n in names}
    ratios: dict[str, dict[str, Any]] = {}
    for key in [*TARGETS, *REPORTED]:
        a, b = key.split("/")
        if a in rounds.runs and b in rounds.runs:
            per_round = [x.msgs_per_s / y.msgs_per_s for x, y in zip(rounds.runs[a], rounds.runs[b], strict=True)]
            ratios[key] = verdict(per_round, TARGETS.get(key, 0.0))
            if key not in TARGETS:
                ratios[key]["target"] = None
                ratios[key]["met"] = None
    rows = []
    for n in names:
        med = medians[n]
        vs_raw = "" if n == "raw" or "raw" not in medians else f"{med['msgs_per_s'] / medians['raw']['msgs_per_s']:.2f}"
        bcpu = med["broker_cpu_s_per_100k"]
        rows.append([
            n, f"{med['messages']:,}", f"{med['msgs_per_s']:,.0f}", vs_raw, f"{med['cpu_s_per_100k']:.2f}",
            "n/a" if bcpu is None else f"{bcpu:.2f}", f"{med['peak_rss_mb']:.0f}",
            " ".join(f"{v:,}" for v in med["all_msgs_per_s"]),
        ])  # fmt: skip
    print()
    print(table(["contender", "messages", "msgs/s", "vs raw", "CPU s/100k", "broker CPU s/100k", "peak RSS MB", "all rounds"], rows))
    for key, v in ratios.items():
        print(f"{key} = {verdict_text(v)}")
    path = write_json("peers", tree=tree, data={
        "benchmark": "peers",
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "config": {
            "messages": args.messages, "partitions": args.partitions, "repeat": args.repeat, "warmup": args.warmup,
            "inputs": rounds.inputs, "contenders": names,
            "broker": "external" if handle.pid is None else "local (started by the benchmark)",
            "measured": "steady part: output count from 5% to 100% of the input (high watermarks every 50 ms); "
                        "CPU and peak RSS (VmHWM) of the contender's process; ratios of msgs/s within each round",
            "chain3": "three stages in one process: kstream three nodes a -> b -> c; raw three loops on three threads; "
                      "Quix one Application with three dataframes; faust three agents",
        },
        "machine_before": machine_before, "machine_after": machine(),
        "versions": {**vers, "peers": peer_versions(names)},
        "median": medians, "ratios": ratios,
        "exit_codes": rounds.exit_codes,
        "runs": [m.as_dict() for n in names for m in rounds.runs[n]],
        "logs": str(Path(os.path.relpath(BENCH_DIR / "results" / "logs", BENCH_DIR.parent))),
    })  # fmt: skip
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
