"""Input as a kstream node writes it: the records of :func:`bench.common.produce_input`, each with
the envelope headers an upstream node sets (``kstream-id``, ``-workflow``, ``-parent``, ``-hops``,
``-attempt``, ``-origin``). A node reading it is in the middle of a chain: it takes the
with-headers path, not the one for records from an external producer."""

from __future__ import annotations

from confluent_kafka import Producer

from bench.common import payload


def envelope(i: int) -> list[tuple[str, bytes]]:
    return [("kstream-id", b"5f0c2a9d41e7b386-%x" % (i + 1)), ("kstream-workflow", b"5f0c2a9d41e7b386-w%x" % (i + 1)),
            ("kstream-parent", b"bench.raw/%d/%d" % (i % 6, i)), ("kstream-hops", b"1"), ("kstream-attempt", b"1"),
            ("kstream-origin", b"bench/upstream")]


def produce_with_headers(bootstrap: str, topic: str, count: int) -> int:
    """Write ``count`` keyed JSON records with kstream headers to ``topic``; returns the value bytes."""
    p = Producer({
        "bootstrap.servers": bootstrap, "linger.ms": 50, "batch.size": 1_000_000, "acks": "all",
        "enable.idempotence": True, "queue.buffering.max.messages": 500_000,
    })  # fmt: skip
    produce, poll = p.produce, p.poll
    total = 0
    for i in range(count):
        value = payload(i)
        total += len(value)
        key = f"user-{i % 5000:05d}".encode()
        while True:
            try:
                produce(topic, value, key, headers=envelope(i))
                break
            except BufferError:
                poll(0.05)
        if i % 10_000 == 0:
            poll(0)
    left = p.flush(120)
    if left:
        raise RuntimeError(f"{left} input records not acknowledged")
    return total
