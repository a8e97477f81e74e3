"""The kstream topologies the benchmarks run with ``kstream run bench/peers/kstream_app.py:topology``.

Built from the environment when ``topology`` is looked up (importing the module does nothing):

* ``BENCH_SOURCE`` / ``BENCH_OUTPUT``: input and output topics (required);
* ``BENCH_SHAPE``: ``pass`` (one node, default) or ``chain3`` (three nodes: a -> b -> c);
* ``BENCH_PROCESSING``: ``at_least_once`` (default) or ``exactly_once``;
* ``BENCH_PREFETCH``: prefetch of every node (default 1);
* ``BENCH_SLEEP_MS``: each message of the first node waits this long (default 0: a plain
  pass-through); ``BENCH_SLEEP_KIND`` ``async`` (``await asyncio.sleep``, default) or ``sync``
  (``time.sleep``).

Every handler passes the value through unchanged as ``bytes``.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Mapping
from typing import Any

from kstream.topology import Topology


def build(source: str, output: str, *, shape: str = "pass", processing: str = "at_least_once", prefetch: int = 1,
          sleep_ms: float = 0.0, sleep_kind: str = "async") -> Topology:
    topology = Topology("bench", processing=processing)  # type: ignore[arg-type]
    delay = sleep_ms / 1000
    first: Any
    if delay and sleep_kind == "async":
        async def slow_async(v: bytes) -> bytes:
            await asyncio.sleep(delay)
            return v
        first = slow_async
    elif delay:
        def slow_sync(v: bytes) -> bytes:
            time.sleep(delay)
            return v
        first = slow_sync
    else:
        def passthrough(v: bytes) -> bytes:
            return v
        first = passthrough

    def forward(v: bytes) -> bytes:
        return v

    if shape == "pass":
        topology.node("pass", source=source, to=output, prefetch=prefetch)(first)
    elif shape == "chain3":
        topology.node("a", source=source, prefetch=prefetch)(first)
        topology.node("b", after="a", prefetch=prefetch)(forward)
        topology.node("c", after="b", to=output, prefetch=prefetch)(forward)
    else:
        raise ValueError(f"unknown BENCH_SHAPE {shape!r}")
    return topology


def env_for(source: str, output: str, *, shape: str = "pass", processing: str = "at_least_once", prefetch: int = 1,
            sleep_ms: float = 0.0, sleep_kind: str = "async") -> dict[str, str]:
    """The environment that makes ``topology`` equal to ``build(...)`` with the same arguments."""
    return {"BENCH_SOURCE": source, "BENCH_OUTPUT": output, "BENCH_SHAPE": shape, "BENCH_PROCESSING": processing,
            "BENCH_PREFETCH": str(prefetch), "BENCH_SLEEP_MS": str(sleep_ms), "BENCH_SLEEP_KIND": sleep_kind}


def from_env(env: Mapping[str, str] = os.environ) -> Topology:
    return build(env["BENCH_SOURCE"], env["BENCH_OUTPUT"], shape=env.get("BENCH_SHAPE", "pass"),
                 processing=env.get("BENCH_PROCESSING", "at_least_once"), prefetch=int(env.get("BENCH_PREFETCH", "1")),
                 sleep_ms=float(env.get("BENCH_SLEEP_MS", "0")), sleep_kind=env.get("BENCH_SLEEP_KIND", "async"))


def __getattr__(name: str) -> Any:
    if name == "topology":
        return from_env()
    raise AttributeError(name)
