"""A slow prefetch-20 node behind a rate limit (topics from SLOWP_SRC / SLOWP_DST; [limits.ext] in settings)."""

from __future__ import annotations

import os
import time

from kstream import Topology

topology = Topology("slowp")


@topology.node("call", source=os.environ.get("SLOWP_SRC", "slowp.in"), to=os.environ.get("SLOWP_DST", "slowp.out"),
               prefetch=20, limit="ext")
def call(n: int) -> int:
    time.sleep(1.0)
    return n
