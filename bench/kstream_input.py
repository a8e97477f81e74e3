"""Input as a kstream node writes it: the records of :func:`bench.common.produce_input`, each with
the envelope headers an upstream node sets (``kstream-id``, ``-workflow``, ``-parent``, ``-hops``,
``-attempt``, ``-origin``). A node reading it is in the middle of a chain: it takes the
with-headers path, not the one for records from an external producer."""

from __future__ import annotations

from bench.common import produce_input


def envelope(i: int) -> list[tuple[str, bytes]]:
    return [("kstream-id", b"5f0c2a9d41e7b386-%x" % (i + 1)), ("kstream-workflow", b"5f0c2a9d41e7b386-w%x" % (i + 1)),
            ("kstream-parent", b"bench.raw/%d/%d" % (i % 6, i)), ("kstream-hops", b"1"), ("kstream-attempt", b"1"),
            ("kstream-origin", b"bench/upstream")]


def produce_with_headers(bootstrap: str, topic: str, count: int) -> int:
    """Write ``count`` keyed JSON records with kstream headers to ``topic``; returns the value bytes."""
    return produce_input(bootstrap, topic, count, headers=envelope)
