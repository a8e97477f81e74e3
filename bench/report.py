"""Write bench/results/REPORT.md and bench/results/throughput.png from the benchmarks' JSON.

    .venv/bin/python -m bench.report

Reads whatever of peers, latency, memory, prefetch, eos and passthrough ``.json`` exists under
bench/results/. The chart is drawn with matplotlib from ``bench/.venv-report`` (created on first
use): this same file, run there with ``--chart`` (that mode needs only the standard library and
matplotlib).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


# -- the chart (runs in bench/.venv-report) ------------------------------------------------------------


def chart(peers_json: Path, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = json.loads(peers_json.read_text())
    med = data["median"]
    names = list(med)
    rate = [med[n]["msgs_per_s"] for n in names]
    cpu = [med[n]["cpu_s_per_100k"] for n in names]
    raw = med.get("raw", {}).get("msgs_per_s")
    colors = ["#7f7f7f" if n == "raw" else "#1f77b4" if n.startswith("kstream") else "#ff7f0e" for n in names]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.8), gridspec_kw={"width_ratios": [3, 2]})
    y = range(len(names))[::-1]
    ax1.barh(list(y), rate, color=colors)
    ax1.set_yticks(list(y), names)
    ax1.set_xlabel("messages / s (median, steady part)")
    ax1.set_title("Pass-through throughput, same broker and input")
    top = max(rate)
    for yi, r, n in zip(y, rate, names, strict=True):
        label = f"{r:,.0f}" + (f"  ({r / raw:.2f}x raw)" if raw and n != "raw" else "")
        if med[n].get("messages") != data["config"]["messages"]:
            label += f"  [first {med[n]['messages']:,} msgs]"
        ax1.text(r + top * 0.01, yi, label, va="center", fontsize=9)
    ax1.set_xlim(0, top * 1.45)
    ax2.barh(list(y), cpu, color=colors)
    ax2.set_yticks(list(y), [""] * len(names))
    ax2.set_xscale("log")
    ax2.set_xlabel("CPU seconds per 100k messages (contender process, log)")
    ax2.set_title("CPU cost")
    for yi, c in zip(y, cpu, strict=True):
        ax2.text(c * 1.08, yi, f"{c:.2f}", va="center", fontsize=9)
    ax2.set_xlim(min(cpu) * 0.5, max(cpu) * 4)
    m = data.get("machine_before", {})
    v = data.get("versions", {})
    fig.suptitle(f"{m.get('nproc')} CPUs ({m.get('cpu_model')}), load {m.get('loadavg')}; kstream {str(v.get('kstream_git_sha'))[:8]}, "
                 f"Kafka {v.get('kafka_broker')}, {data['config']['messages']:,} msgs x {data['config']['partitions']} partitions",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


# -- the Markdown report (runs in the project venv) ------------------------------------------------------


def load(name: str) -> dict[str, Any] | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def fmt(v: float | None, spec: str = ",.0f") -> str:
    return "n/a" if v is None else format(v, spec)


def verdict(ok: bool) -> str:
    return "met" if ok else "**NOT met**"


def report() -> str:
    out = ["# kstream benchmark report", ""]
    peers = load("peers")
    if peers:
        med, cfg = peers["median"], peers["config"]
        m, v = peers["machine_before"], peers["versions"]
        out += [f"## Peers: pass-through, one process each ({peers['when']})", "",
                f"Input: {cfg['messages']:,} records of ~186 B JSON, {cfg['partitions']} partitions; {cfg['repeat']} rotated round(s), "
                f"medians; warm-up {cfg['warmup']:,} messages. Contenders with fewer messages read the first N of the same data.", "",
                "| contender | messages | msgs/s | vs raw | CPU s/100k | broker CPU s/100k | peak RSS MB | all rounds |",
                "|---|---:|---:|---:|---:|---:|---:|---|"]
        raw = med.get("raw", {}).get("msgs_per_s")
        for n, r in med.items():
            ratio = "1.00" if n == "raw" else fmt(r["msgs_per_s"] / raw, ".2f") if raw else "n/a"
            out.append(f"| {n} | {r['messages']:,} | {fmt(r['msgs_per_s'])} | {ratio} | {fmt(r['cpu_s_per_100k'], '.2f')} | "
                       f"{fmt(r['broker_cpu_s_per_100k'], '.2f')} | {fmt(r['peak_rss_mb'])} | "
                       f"{' '.join(f'{x:,}' for x in r['all_msgs_per_s'])} |")
        out += ["", "| target | figure | per round | verdict |", "|---|---:|---|---|"]
        for key, t in peers["targets"].items():
            rounds = ", ".join(f"{x:.2f}" for x in t["per_round"])
            out.append(f"| {key} >= {t['target']} | {t['ratio']:.2f} | {rounds} | {verdict(t['met'])} |")
        pv = v.get("peers", {})
        dirty = " (kstream/ modified)" if v.get("kstream_dirty") else ""
        peer_text = "; ".join(f"{k}: " + ", ".join(f"{p} {ver}" for p, ver in d.items()) for k, d in pv.items())
        out += ["", f"Versions: kstream `{v['kstream_git_sha']}`{dirty}, Python {v['python']}, "
                f"confluent-kafka {v['confluent_kafka']} / librdkafka {v['librdkafka']}, Kafka broker {v['kafka_broker']}; {peer_text}.",
                f"Machine: {m['nproc']} CPUs, {m['cpu_model']}; load average before {m['loadavg']}, "
                f"after {peers['machine_after']['loadavg']}.",
                "", "![throughput](throughput.png)", ""]
    eos = load("eos")
    if eos:
        med = eos["median"]
        out += [f"## Exactly-once vs at-least-once, 3-node chain ({eos['when']})", "",
                f"{eos['config']['messages']:,} messages; {eos['config']['repeat']} round(s). "
                f"Load before {eos['machine_before']['loadavg']}.", "",
                "| chain | msgs/s | CPU s/100k | peak RSS MB | all rounds |", "|---|---:|---:|---:|---|"]
        for n, r in med.items():
            out.append(f"| {n} | {fmt(r['msgs_per_s'])} | {fmt(r['cpu_s_per_100k'], '.2f')} | {fmt(r['peak_rss_mb'])} | "
                       f"{' '.join(f'{x:,}' for x in r['all_msgs_per_s'])} |")
        out += ["", f"EOS / ALO = **{eos['ratio']:.2f}** (target >= {eos['target_ratio']}): {verdict(eos['met'])}; "
                f"per round {eos['round_ratios']}.", ""]
    lat = load("latency")
    if lat:
        c = lat["config"]
        out += [f"## End-to-end latency, 3-node chain at {c['rate']:,.0f} msgs/s ({lat['when']})", "",
                f"{c['seconds']:g} s measured per variant; output LogAppendTime - produce time. "
                f"Load before {lat['machine_before']['loadavg']}.",
                "", "| variant | overrides | p50 ms | p95 ms | p99 ms | max ms | reader-receive p99 ms | chain CPU s/s | p99 <= 50 ms |",
                "|---|---|---:|---:|---:|---:|---:|---:|---|"]
        for n, r in lat["variants"].items():
            a = r["append_ms"]
            over = ", ".join([*(f"{k}={x}" for k, x in r["kafka_overrides"].items()),
                              *(f"runtime.{k}={x}" for k, x in r["runtime"].items())])
            out.append(f"| {n} | {over or '(defaults)'} | {a['p50']:.1f} | {a['p95']:.1f} | {a['p99']:.1f} | {a['max']:.1f} | "
                       f"{r['receive_ms']['p99']:.1f} | {r['chain_cpu_s_per_s']:.2f} | {verdict(a['p99'] <= 50)} |")
        out.append("")
    mem = load("memory")
    if mem:
        out += [f"## Memory of a worker process ({mem['when']})", ""]
        s = mem.get("steady")
        if s:
            out.append(f"- Steady pass-through: RSS {s['rss_first_mb']:.1f} MB after {s['first']:,} messages, "
                       f"{s['rss_last_mb']:.1f} MB after {s['messages']:,}: growth **{s['growth']:+.1%}** (target <= 10%): "
                       f"{verdict(s['met'])}; peak {fmt(s['peak_rss_mb'], '.1f')} MB.")
        bl = mem.get("backlog")
        if bl:
            out.append(f"- Backlog of {bl['backlog']:,} behind a slow node (prefetch {bl['prefetch']}, "
                       f"{bl['sleep_kind']} {bl['sleep_ms']:g} ms): RSS "
                       + ", ".join(f"{k} {x['rss_mb']:.1f} MB" for k, x in bl["at"].items())
                       + f"; peak {fmt(bl['peak_rss_mb'], '.1f')} MB; {fmt(bl['msgs_per_s'])} msgs/s.")
        out.append("")
    pf = load("prefetch")
    if pf:
        c, o = pf["config"], pf["order"]
        out += [f"## Prefetch on an I/O-bound node ({pf['when']})", "",
                f"- {c['messages']:,} messages, {c['keys']} keys, 1 partition, {c['sleep_ms']:g} ms each: prefetch {c['prefetch']} "
                f"{pf['runs'][str(c['prefetch'])]['msgs_per_s']:,.0f} msgs/s vs prefetch 1 {pf['runs']['1']['msgs_per_s']:,.0f} msgs/s = "
                f"**{pf['ratio']:.1f}x** (target >= {pf['target_ratio']:g}): {verdict(pf['met'])}.",
                f"- Per-key order in the output: {'kept' if o['ok'] else '**BROKEN**'} ({o['records']:,} records, "
                f"{o['n_keys_out_of_order']} keys out of order, {o['missing']} missing).", ""]
    pt = load("passthrough")
    if pt:
        out += [f"## passthrough (in-process kstream vs raw, {pt['when']})", "",
                "| contender | msgs/s | CPU s/100k |", "|---|---:|---:|"]
        for n, r in pt["median"].items():
            out.append(f"| {n} | {fmt(r['msgs_per_s'])} | {fmt(r['cpu_s_per_100k'], '.2f')} |")
        out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.report", description=__doc__.splitlines()[0])
    ap.add_argument("--chart", nargs=2, metavar=("PEERS_JSON", "PNG"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.chart:
        chart(Path(args.chart[0]), Path(args.chart[1]))
        return 0
    path = RESULTS / "REPORT.md"
    path.write_text(report() + "\n")
    print(f"report: {path}")
    if (RESULTS / "peers.json").exists():
        from bench.common import peer_venv

        python = peer_venv("report", ["matplotlib"])
        png = RESULTS / "throughput.png"
        subprocess.run([str(python), str(Path(__file__).resolve()), "--chart", str(RESULTS / "peers.json"), str(png)], check=True)
        print(f"chart: {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
