"""Workflows: POST latency of the HTTP API at a constant rate, GET throughput, workflows per second.

    .venv/bin/python -m bench.workflows [--rate 500] [--seconds 30] [--rounds 3] [--workflows 2000]

1. POST start: ``kstream serve examples/onboarding.py`` in its own process (no workers: this is
   the API's own cost, a start written with acks=all before the answer). vegeta (pinned, built
   from the Go module proxy into ``.tools/bin`` by ``make tools``) attacks ``POST
   /workflows/onboarding`` at ``--rate`` req/s for ``--seconds`` (no Idempotency-Key: each
   request starts a new workflow); ``--rounds`` rounds, the median of the p99s is the figure
   (target p99 <= 20 ms, bar 50 ms, 0 errors).
2. GET status: vegeta at max rate (64 workers) on ``GET /workflows/{id}`` for 10 s: throughput.
3. Workflows per second: the onboarding example with 10 ms steps, the orchestrator in one
   ``kstream run --node orchestrator`` process and the steps in another; ``--workflows`` starts
   written to the inbox at once; time from the first start to the last ``completed`` state, and
   the orchestrator process's CPU seconds per workflow.

Writes ``bench/results/workflows.json`` (commit, versions, machine load, every round).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from bench.common import REPO, BenchError, ProcessContender, broker, free_port, machine, provision_topology, versions, write_json
from bench.results import add_tree_args, check_tree

VEGETA = "github.com/tsenart/vegeta/v12@v12.13.0"
TOOLS = REPO / ".tools" / "bin"
APP = "examples/onboarding.py:onboarding"
TARGET_P99_MS, BAR_P99_MS = 20.0, 50.0


def vegeta() -> Path:
    """The pinned vegeta binary, built once into .tools/bin from the Go module proxy."""
    exe = TOOLS / "vegeta"
    if not exe.exists():
        if shutil.which("go") is None:
            raise BenchError("vegeta is not built and there is no Go toolchain: run `make tools` where Go is installed")
        TOOLS.mkdir(parents=True, exist_ok=True)
        print(f"building {VEGETA} into {TOOLS} ...", flush=True)
        subprocess.run(["go", "install", VEGETA], check=True, env={**os.environ, "GOBIN": str(TOOLS)})
    return exe


def attack(exe: Path, targets: str, *, rate: int, seconds: float, workers: int | None = None) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write(targets)
    args = [str(exe), "attack", f"-targets={f.name}", f"-duration={seconds}s", f"-rate={rate}", "-timeout=10s"]
    if workers:
        args += [f"-max-workers={workers}", f"-workers={workers}"]
    attack_out = subprocess.run(args, capture_output=True, check=True).stdout
    report = subprocess.run([str(exe), "report", "-type=json"], input=attack_out, capture_output=True, check=True).stdout
    os.unlink(f.name)
    data: dict[str, Any] = json.loads(report)
    lat = data["latencies"]
    return {"requests": data["requests"], "throughput": round(data["throughput"], 1), "rate": round(data["rate"], 1),
            "p50_ms": lat["50th"] / 1e6, "p95_ms": lat["95th"] / 1e6, "p99_ms": lat["99th"] / 1e6, "max_ms": lat["max"] / 1e6,
            "success": data["success"], "status_codes": data["status_codes"], "errors": data["errors"][:5],
            "loadavg_after": [round(x, 2) for x in os.getloadavg()]}


def http_json(method: str, url: str, body: Any = None) -> Any:
    req = urllib.request.Request(url, data=None if body is None else json.dumps(body).encode(), method=method,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def wait_ready(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise BenchError(f"the API at {url} was not ready within {timeout:g} s")


def kstream(name: str, *args: str, bootstrap: str, namespace: str, env: dict[str, str] | None = None) -> ProcessContender:
    argv = [str(Path(sys.executable).parent / "kstream"), "-b", bootstrap, "-n", namespace, *args]
    return ProcessContender(name, argv, env=env, stop_signal=15)


def background(proc: ProcessContender) -> tuple[threading.Thread, threading.Event]:
    stop = threading.Event()
    thread = threading.Thread(target=proc, args=(stop,), daemon=True)
    thread.start()
    return thread, stop


def bench_api(exe: Path, bootstrap: str, args: argparse.Namespace) -> dict[str, Any]:
    from examples.onboarding import onboarding

    namespace = f"bwf{uuid.uuid4().hex[:8]}"
    provision_topology(onboarding.topology, bootstrap, namespace, 6)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    api = kstream("wf-api", "serve", APP, "--port", str(port), "--log-level", "warning", bootstrap=bootstrap, namespace=namespace)
    thread, stop = background(api)
    try:
        wait_ready(url)
        body = Path(tempfile.mkdtemp()) / "body.json"
        body.write_text('{"email": "bench@example.com"}')
        post = f"POST {url}/workflows/onboarding\nContent-Type: application/json\n@{body}\n"
        attack(exe, post, rate=50, seconds=3)  # warm-up: connections, the producer's metadata
        rounds = []
        for i in range(args.rounds):
            r = attack(exe, post, rate=args.rate, seconds=args.seconds)
            print(f"POST round {i + 1}: p50 {r['p50_ms']:.2f} ms  p99 {r['p99_ms']:.2f} ms  success {r['success']:.4f}  "
                  f"codes {r['status_codes']}", flush=True)
            rounds.append(r)
        wid = http_json("POST", f"{url}/workflows/onboarding", {"email": "get@example.com"})["workflowId"]
        get = attack(exe, f"GET {url}/workflows/{wid}\n", rate=0, seconds=10, workers=64)
        print(f"GET: {get['throughput']:.0f} req/s  p99 {get['p99_ms']:.2f} ms  success {get['success']:.4f}", flush=True)
        rss = api.peak_rss()
    finally:
        stop.set()
        thread.join(90)
    p99s = [r["p99_ms"] for r in rounds]
    return {"post": {"rate": args.rate, "seconds": args.seconds, "rounds": rounds, "median_p99_ms": statistics.median(p99s),
                     "errors": sum(r["requests"] - round(r["requests"] * r["success"]) for r in rounds),
                     "target_p99_ms": TARGET_P99_MS, "bar_p99_ms": BAR_P99_MS},
            "get": get, "api_peak_rss_mb": round((rss or 0) / 2**20, 1)}


def bench_throughput(bootstrap: str, args: argparse.Namespace) -> dict[str, Any]:
    from confluent_kafka import Producer

    from examples.onboarding import onboarding
    from kstream.kafka.confluent import KafkaTopicReader
    from kstream.kafka.port import latest_by_key
    from kstream.naming import node_topic, workflow_state_topic
    from kstream.workflows.client import start_event

    namespace = f"bwf{uuid.uuid4().hex[:8]}"
    provision_topology(onboarding.topology, bootstrap, namespace, 6)
    env = {"STEP_SLEEP": "0.01"}
    steps = [n for n in onboarding.topology.order() if n != "orchestrator"]
    orch = kstream("wf-orchestrator", "run", APP, "--node", "orchestrator", "--log-level", "warning",
                   bootstrap=bootstrap, namespace=namespace, env=env)
    workers = kstream("wf-steps", "run", APP, *[a for s in steps for a in ("--node", s)], "--log-level", "warning",
                      bootstrap=bootstrap, namespace=namespace, env=env)
    running = [background(orch), background(workers)]
    reader = KafkaTopicReader(bootstrap, {})
    state_topic = workflow_state_topic(namespace, "onboarding")
    try:
        # Warm-up: one workflow through every node (consumer groups joined, partitions loaded).
        producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
        inbox = node_topic(namespace, "onboarding", "orchestrator")
        producer.produce(inbox, start_event("warm", {"email": "w@x"}, key_hash=None, at=int(time.time() * 1000)), b"warm")
        producer.flush(30)

        def completed() -> int:
            records = latest_by_key(reader.read_compacted(state_topic, 60))
            return sum(1 for r in records.values() if r.value() and b'"status":"completed"' in (r.value() or b""))

        deadline = time.monotonic() + 120
        while completed() < 1:
            if time.monotonic() > deadline:
                raise BenchError("the warm-up workflow did not complete within 120 s")
            time.sleep(0.5)
        cpu0 = orch.cpu()
        t0 = time.monotonic()
        for i in range(args.workflows):
            wid = f"b{i}"
            producer.produce(inbox, start_event(wid, {"email": f"{wid}@x"}, key_hash=None, at=int(time.time() * 1000)),
                             wid.encode())
            if i % 1000 == 0:
                producer.poll(0)
        producer.flush(30)
        done = 1
        deadline = time.monotonic() + 600
        while done < args.workflows + 1:
            if time.monotonic() > deadline:
                raise BenchError(f"only {done - 1} of {args.workflows} workflows completed within 600 s")
            time.sleep(0.5)
            done = completed()
        elapsed = time.monotonic() - t0
        cpu = orch.cpu() - cpu0
    finally:
        for thread, stop in running:
            stop.set()
            thread.join(90)
    result = {"workflows": args.workflows, "step_sleep_s": 0.01, "seconds": round(elapsed, 2),
              "workflows_per_s": round(args.workflows / elapsed, 1),
              "orchestrator_cpu_ms_per_workflow": round(cpu * 1000 / args.workflows, 3),
              "loadavg_after": [round(x, 2) for x in os.getloadavg()]}
    print(f"completed {args.workflows} workflows in {elapsed:.1f} s: {result['workflows_per_s']} /s, "
          f"orchestrator {result['orchestrator_cpu_ms_per_workflow']} ms CPU per workflow", flush=True)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workflows", type=int, default=2000)
    add_tree_args(parser)
    args = parser.parse_args()
    tree = check_tree(args.allow_dirty)
    sys.path.insert(0, str(REPO))
    exe = vegeta()
    load_before = machine()
    with broker() as handle:
        api = bench_api(exe, handle.bootstrap, args)
        throughput = bench_throughput(handle.bootstrap, args)
        result = {"benchmark": "workflows", "versions": versions(handle), "machine_before": load_before,
                  "vegeta": VEGETA, **api, "throughput": throughput}
    path = write_json("workflows", result, tree=tree)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
