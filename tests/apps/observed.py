"""A 3-node chain whose first node retries and trashes, for the observability tests.

``check`` (source OBSERVED_SRC) fails the first attempt of a record with ``"flaky": true``
(retried in place, then passes) and always fails one with ``"explode": true`` (Permanent: to
the Trash); ``double`` and ``deliver`` (to OBSERVED_DST) pass everything on.
"""

from __future__ import annotations

import os

from kstream import Context, Permanent, Retry, Topology


def make_observed(src: str, dst: str) -> Topology:
    topology = Topology("observed")

    @topology.node("check", source=src, retry=Retry(attempts=3, backoff=0.01, max_backoff=0.05))
    def check(order: dict, ctx: Context) -> dict:  # type: ignore[type-arg]
        if order.get("explode"):
            raise Permanent(f"order {order['id']} is broken")
        if order.get("flaky") and ctx.attempt == 1:
            raise RuntimeError(f"order {order['id']}: service hiccup")
        return order

    @topology.node("double", after="check")
    def double(order: dict) -> dict:  # type: ignore[type-arg]
        return {**order, "amount": order.get("amount", 0) * 2}

    @topology.node("deliver", after="double", to=dst)
    def deliver(order: dict) -> dict:  # type: ignore[type-arg]
        return order

    return topology


topology = make_observed(os.environ.get("OBSERVED_SRC", "observed.in"), os.environ.get("OBSERVED_DST", "observed.out"))
