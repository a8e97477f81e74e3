"""One exactly-once node that takes ~1 ms per message (topics from SLOW_SRC / SLOW_DST)."""

from __future__ import annotations

import os
import time

from kstream import Topology

topology = Topology("slow", processing="exactly_once")


@topology.node("copy", source=os.environ.get("SLOW_SRC", "slow.in"), to=os.environ.get("SLOW_DST", "slow.out"))
def copy(n: int) -> int:
    time.sleep(0.001)
    return n
