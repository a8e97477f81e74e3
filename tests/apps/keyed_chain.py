"""A 3-node prefetch-1 chain of plain sync handlers: the worker's inline hot path end to end.

``a`` reads records without kstream headers (from an external producer), ``b`` and ``c`` read
records with them, all on the fast path. ``b`` waits ``KCHAIN_SLEEP_MS`` per message so a
test can act mid-stream. Topics from ``KCHAIN_SRC`` / ``KCHAIN_DST``; ``KCHAIN_EOS=1`` runs it
exactly-once.
"""

from __future__ import annotations

import os
import time
from typing import Any

from kstream import Topology


def make_keyed_chain(src: str, dst: str, *, exactly_once: bool = False, sleep_ms: float = 0.0) -> Topology:
    topology = Topology("kchain", processing="exactly_once" if exactly_once else "at_least_once")
    delay = sleep_ms / 1000

    @topology.node("a", source=src)
    def a(v: dict[str, Any]) -> dict[str, Any]:
        return {**v, "a": True}

    @topology.node("b", after="a")
    def b(v: dict[str, Any]) -> dict[str, Any]:
        if delay:
            time.sleep(delay)
        return {**v, "b": True}

    @topology.node("c", after="b", to=dst)
    def c(v: dict[str, Any]) -> dict[str, Any]:
        return {**v, "c": True}

    return topology


topology = make_keyed_chain(os.environ.get("KCHAIN_SRC", "kchain.in"), os.environ.get("KCHAIN_DST", "kchain.out"),
                            exactly_once=os.environ.get("KCHAIN_EOS") == "1",
                            sleep_ms=float(os.environ.get("KCHAIN_SLEEP_MS", "0")))
