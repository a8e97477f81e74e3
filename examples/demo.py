"""`make demo`: the example topology on sample data against the local broker, end to end.

Applies the topics, produces sample orders (a few of them broken), runs the three workers until
every order is either delivered or in the Trash, prints what happened and stops.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from pathlib import Path

import orjson
from confluent_kafka import Consumer, Producer, TopicPartition

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from examples.orders import topology
from kstream.app import admin, build_worker, run_workers
from kstream.cli.common import Options
from kstream.provision import apply, plan
from kstream.trash import TrashCodec

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


def main() -> int:
    logging.basicConfig(level=logging.ERROR)  # the per-message warnings would drown the summary
    settings = Options().settings()
    bootstrap = settings.bootstrap_servers
    print(f"broker      {bootstrap}")
    client = admin(settings)
    for change in apply(plan(topology, settings, client, create_external=True), client):
        print(f"topic       {change.line()}")
    out_start = end_offsets(bootstrap, SINK)
    trash_start = end_offsets(bootstrap, settings.trash_topic)

    run = time.strftime("%H%M%S")
    records = sample_orders(run)
    producer = Producer({"bootstrap.servers": bootstrap})
    for key, value in records:
        producer.produce(SOURCE, value, key)
    producer.flush(30)
    print(f"produced    {len(records)} orders to {SOURCE} (3 of them broken)")

    stop = threading.Event()
    workers = [build_worker(topology, name, settings, stop) for name in topology.order()]
    runner = threading.Thread(target=run_workers, args=(workers, stop))
    runner.start()
    try:
        delivered = read_since(bootstrap, SINK, out_start, 20, timeout=60)
        trashed = read_since(bootstrap, settings.trash_topic, trash_start, 3, timeout=30)
    finally:
        stop.set()
        runner.join(30)

    print(f"in          {len(records)}")
    print(f"out         {len(delivered)} delivered to {SINK}")
    print(f"trashed     {len(trashed)} in {settings.trash_topic}")
    for w in workers:
        print(f"  node {w.processor.node.name:<8} processed {w.processed:>3}  trashed {w.processor.trashed}")
    codec = TrashCodec()
    for data in trashed:
        e = codec.decode(data)
        print(f"  trash {e.id}  node={e.node:<7} reason={e.reason:<10} {e.error_message[:70]}")
    if delivered:
        print(f"sample out  {delivered[0].decode()}")
    ok = len(delivered) == 20 and len(trashed) == 3
    print("demo ok: every order delivered or in the Trash" if ok else "demo FAILED: some orders are unaccounted for")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
