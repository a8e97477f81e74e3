"""`make demo`: the example topologies on sample data against the local broker, end to end.

1. stream: sample orders (three of them broken) flow through parse -> price -> deliver; the
   good ones reach erp.orders, the broken ones land in the Trash with their reasons;
2. trash: the operator lists and shows them, an invalid fix is refused, the fixes are kept
   (`kstream trash edit`) and replayed (`kstream trash replay`); they arrive;
3. batch: a small shop API (cursor pagination, occasional 503s) is pulled page by page into
   the same stream (`kstream start`); a second run picks up only the orders added since;
4. workflows: onboardings started over HTTP (`kstream serve`'s API): one completes through a
   flaky CRM, one fails at billing and is compensated in reverse order, one is held at its
   failed CRM call and finished by `kstream trash replay`; their status JSON as they run.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer, Producer, TopicPartition

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
APP = "examples/orders.py:topology"

from examples.onboarding import CrmStub, onboarding, onboarding_held
from examples.orders import PRICES, topology
from examples.shop import topology as shop
from examples.shop_api import ShopApi
from kstream.app import admin, build_worker, run_workers, trash_store
from kstream.batch import read_cursors
from kstream.cli.common import Options
from kstream.config import Settings
from kstream.kafka.confluent import KafkaTopicReader
from kstream.provision import apply, plan
from kstream.trash import TrashEntry
from kstream.trash_store import TrashFilter

SOURCE, SINK = "shop.orders.raw", "erp.orders"


def sample_orders(run: str) -> list[tuple[str, bytes]]:
    good = [
        {"order": f"{run}-{i}", "customer": f"c{i % 4}", "items": [["apple", 1 + i % 3], ["pear", 2]]}
        for i in range(20)
    ]
    records = [(o["customer"], orjson.dumps(o)) for o in good]
    records += [
        ("c9", b'{"order": "broken-json", "customer": '),                                   # not JSON
        ("c9", orjson.dumps({"order": f"{run}-neg", "customer": "c9", "items": [["plum", -2]]})),  # qty <= 0
        ("c9", orjson.dumps({"order": f"{run}-sku", "customer": "c9", "items": [["durian", 1]]})),  # unknown sku
    ]
    return records


def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "kstream-demo-watermarks"})
    try:
        meta = c.list_topics(topic, timeout=10).topics[topic]
        return {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in meta.partitions}
    finally:
        c.close()


def read_since(bootstrap: str, topic: str, start: dict[int, int], count: int, timeout: float) -> list[bytes]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "kstream-demo-reader", "enable.auto.commit": False})
    c.assign([TopicPartition(topic, p, o) for p, o in start.items()])
    values: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while len(values) < count and time.monotonic() < deadline:
            values += [m.value() for m in c.consume(100, 0.2) if m.error() is None]
        return values
    finally:
        c.close()


def kstream_cli(bootstrap: str, *args: str, stdin: str | None = None) -> str:
    """Run the kstream CLI as an operator would; print and return what it says."""
    argv = [sys.executable, "-m", "kstream.cli.main", "-b", bootstrap, *args]
    print(f"\n$ kstream {' '.join(args)}")
    proc = subprocess.run(argv, capture_output=True, text=True, input=stdin, timeout=120, cwd=ROOT, check=False)
    for line in (proc.stdout + proc.stderr).splitlines():
        print(f"  {line}")
    return proc.stdout


def fixed_payload(entry: TrashEntry) -> bytes:
    """How the operator fixes each broken order (the demo knows what it broke)."""
    if entry.node == "parse":  # the truncated JSON: type the order in again
        return orjson.dumps({"order": "broken-json-fixed", "customer": "c9", "items": [["plum", 2]]})
    order = orjson.loads(entry.value or b"{}")
    for line in order["lines"]:
        line["qty"] = max(line["qty"], 1)
        if line["sku"] not in PRICES:
            line["sku"] = "kiwi"
    return orjson.dumps(order)


def act_stream(settings: Settings, run: str) -> bool:
    bootstrap = settings.bootstrap_servers
    out_start, trash_start = end_offsets(bootstrap, SINK), end_offsets(bootstrap, settings.trash_topic)
    records = sample_orders(run)
    producer = Producer({"bootstrap.servers": bootstrap})
    for key, value in records:
        producer.produce(SOURCE, value, key)
    producer.flush(30)
    print(f"\n== 1. stream: {len(records)} orders to {SOURCE} (3 of them broken)")
    delivered = read_since(bootstrap, SINK, out_start, 20, timeout=60)
    trashed = read_since(bootstrap, settings.trash_topic, trash_start, 3, timeout=30)
    print(f"in          {len(records)}")
    print(f"out         {len(delivered)} delivered to {SINK}")
    print(f"trashed     {len(trashed)} in {settings.trash_topic}")
    if delivered:
        print(f"sample out  {delivered[0].decode()}")
    return len(delivered) == 20 and len(trashed) == 3


def act_trash(settings: Settings, tmp: Path, since: datetime) -> bool:
    bootstrap = settings.bootstrap_servers
    print("\n== 2. trash: inspect, fix and replay the broken orders")
    store = trash_store(settings)
    entries = store.entries(TrashFilter(topology="orders", since=since))
    store.close()
    kstream_cli(bootstrap, "trash", "list", "--topology", "orders", "--since", since.isoformat())
    if not entries:
        return False
    kstream_cli(bootstrap, "trash", "show", entries[0].id)
    bad = tmp / "still-bad.json"
    price_entry = next((e for e in entries if e.node == "price"), None)
    if price_entry is not None:  # an edit that is still invalid is refused, the entry unchanged
        bad.write_bytes((price_entry.value or b"").replace(b'"qty":-2', b'"qty":-5'))
        kstream_cli(bootstrap, "trash", "edit", price_entry.id, "--app", APP, "--file", str(bad))
    for entry in entries:
        fixed = tmp / f"{entry.id}.json"
        fixed.write_bytes(fixed_payload(entry))
        kstream_cli(bootstrap, "trash", "edit", entry.id, "--app", APP, "--file", str(fixed))
    out_start = end_offsets(bootstrap, SINK)
    kstream_cli(bootstrap, "trash", "replay", *(e.id for e in entries))
    arrived = read_since(bootstrap, SINK, out_start, len(entries), timeout=60)
    for data in arrived:
        print(f"replayed -> {data.decode()}")
    return len(arrived) == len(entries)


def act_batch(settings: Settings, run: str) -> bool:
    bootstrap = settings.bootstrap_servers
    print("\n== 3. batch: pull orders page by page from the shop API (with occasional 503s)")
    ok = True
    with ShopApi(120, fail_every=3) as api:
        os.environ["SHOP_API"] = api.url
        for label, expected in (("full sync", 120), ("delta", 15)):
            if label == "delta":
                api.add(15)
            out_start = end_offsets(bootstrap, SINK)
            kstream_cli(bootstrap, "start", "examples/shop.py:topology", "pull", "--key", run)
            arrived = read_since(bootstrap, SINK, out_start, expected, timeout=90)
            wait_for_run_end(settings, run)
            print(f"{label:<11} {len(arrived)} orders pulled, processed and delivered to {SINK} "
                  f"(the API has answered {api.requests} requests so far, {api.failures} of them 503)")
            ok = ok and len(arrived) == expected
    kstream_cli(bootstrap, "cursors", "get", "examples/shop.py:topology", "pull", "--scope", run)
    return ok


def http(method: str, url: str, body: object = None) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(url, data=None if body is None else orjson.dumps(body), method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, orjson.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, orjson.loads(exc.read())


def follow(url: str, wid: str, until: set[str], timeout: float = 60.0,
           step: tuple[str, str] | None = None) -> dict[str, Any]:
    """Long-poll the status until it is one of ``until`` (or ``step`` has that status)."""
    deadline = time.monotonic() + timeout
    _, doc = http("GET", f"{url}/workflows/{wid}")
    while doc.get("status") not in until and time.monotonic() < deadline:
        if step is not None and doc.get("steps", {}).get(step[0], {}).get("status") == step[1]:
            break
        _, doc = http("GET", f"{url}/workflows/{wid}?wait=5s")
    return doc


def show(doc: dict[str, Any]) -> None:
    for line in orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode().splitlines():
        print(f"  {line}")


def act_workflows(settings: Settings, crm: CrmStub, run: str) -> bool:
    from examples.workflow_api import serving

    print("\n== 4. workflows: onboarding started over HTTP, steps in parallel, compensations, hold + replay")
    with serving(settings, [onboarding, onboarding_held]) as url:
        starts = [("onboarding", f"ann-{run}@example.com"), ("onboarding", f"bob-{run}+nocard@example.com"),
                  ("onboarding_held", f"carol-{run}+crmdown@example.com")]
        ids = []
        for wf_type, email in starts:
            t0 = time.perf_counter()
            status, body = http("POST", f"{url}/workflows/{wf_type}", {"email": email})
            print(f"POST /workflows/{wf_type} {{\"email\": \"{email}\"}} -> {status} {orjson.dumps(body).decode()} "
                  f"in {(time.perf_counter() - t0) * 1000:.1f} ms")
            ids.append(str(body["workflowId"]))
        ann, bob, carol = ids
        _, first = http("GET", f"{url}/workflows/{ann}")
        print(f"\nGET /workflows/{ann} right after the POST: {first['status']}")
        running = follow(url, ann, {"completed", "compensated"}, step=("verify", "completed"))
        print(f"\nGET /workflows/{ann} while it runs (provision, billing and crm in parallel):")
        show(running)
        done = follow(url, ann, {"completed", "compensated", "failed"})
        print(f"\nGET /workflows/{ann} at the end:")
        show(done)
        failed = follow(url, bob, {"compensated", "compensation_failed", "completed"})
        print(f"\nGET /workflows/{bob}: billing declined the card, completed steps undone in reverse order:")
        show(failed)
        held = follow(url, carol, {"blocked", "completed"})
        print(f"\nGET /workflows/{carol}: the CRM refused every attempt, the workflow is held:")
        show(held)
        crm.recover()
        store = trash_store(settings)
        entries = [e for e in store.entries(TrashFilter(topology="onboarding_held")) if e.workflow == carol]
        store.close()
        kstream_cli(settings.bootstrap_servers, "trash", "replay", *(e.id for e in entries))
        finished = follow(url, carol, {"completed"})
        print(f"\nGET /workflows/{carol} after the replay (the other steps did not run again):")
        show(finished)
    return (done.get("status") == "completed" and failed.get("status") == "compensated"
            and finished.get("status") == "completed")


def wait_for_run_end(settings: Settings, scope: str) -> None:
    reader = KafkaTopicReader(settings.bootstrap_servers, settings.client_properties())
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        states = read_cursors(reader, settings.cursors_topic, topology="shop", node="pull")
        if any(s.scope == scope and s.run is None for s in states):
            return
        time.sleep(0.2)


def main() -> int:
    logging.basicConfig(level=logging.ERROR)  # the per-message warnings would drown the summary
    settings = Options().settings()
    print(f"broker      {settings.bootstrap_servers}")
    client = admin(settings)
    topologies = (topology, shop, onboarding.topology, onboarding_held.topology)
    for topo in topologies:
        for change in apply(plan(topo, settings, client, create_external=True), client):
            print(f"topic       {change.line()}")
    run = time.strftime("%H%M%S")
    since = datetime.now(UTC) - timedelta(seconds=1)
    stop = threading.Event()
    crm = CrmStub(flaky=3).__enter__()
    os.environ["CRM_URL"] = crm.url
    workers = [build_worker(t, name, settings, stop) for t in topologies for name in t.order()]
    runner = threading.Thread(target=run_workers, args=(workers, stop))
    runner.start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            results = [act_stream(settings, run), act_trash(settings, Path(tmp), since), act_batch(settings, run),
                       act_workflows(settings, crm, run)]
    finally:
        stop.set()
        runner.join(30)
        crm.__exit__()
    print("\n== per node")
    for w in workers:
        print(f"  {w.name:<16} processed {w.processed:>4}  trashed {w.processor.trashed}")
    ok = all(results)
    print("\ndemo ok: every order delivered, fixed from the Trash, or pulled from the API; workflows as expected"
          if ok else f"\ndemo FAILED: acts ok = {results}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
