"""Exactly-once nodes that take their time (topics from WAITS_SRC / WAITS_DST, mode from WAITS_MODE).

``slow``: 50 ms per message. ``retry``: message 7 of every 500 fails once, then waits 15 s in
place before its second try: longer than the transaction timeout the test sets (10 s).
"""

from __future__ import annotations

import os
import time

from kstream import Retry, Topology

topology = Topology("waits", processing="exactly_once")
MODE = os.environ.get("WAITS_MODE", "slow")
_failed: set[int] = set()


@topology.node("work", source=os.environ.get("WAITS_SRC", "waits.in"), to=os.environ.get("WAITS_DST", "waits.out"),
               retry=Retry(attempts=2, backoff=15.0, max_backoff=15.0, jitter=0.0))
def work(n: int) -> int:
    if MODE == "slow":
        time.sleep(0.05)
    elif n % 500 == 7 and n not in _failed:
        _failed.add(n)
        raise RuntimeError(f"{n}: first try fails")
    return n
