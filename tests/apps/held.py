"""Two nodes on one source whose handlers wait until released (topic from HELD_SRC): ``hold``
(async, prefetch 10: the concurrent strategy) and ``step`` (sync, prefetch 1: the serial one)."""

from __future__ import annotations

import asyncio
import os
import threading

from kstream import Topology


def make_held(src: str, hold_release: threading.Event, step_release: threading.Event) -> Topology:
    topology = Topology("held")

    @topology.node("hold", source=src, prefetch=10)
    async def hold(order: dict) -> None:  # type: ignore[type-arg]
        while not hold_release.is_set():
            await asyncio.sleep(0.02)

    @topology.node("step", source=src)
    def step(order: dict) -> None:  # type: ignore[type-arg]
        step_release.wait(60)

    return topology


topology = make_held(os.environ.get("HELD_SRC", "held.in"), threading.Event(), threading.Event())
