"""A topology that needs every kind of right a node can need, for the secured-broker tests.

``parse`` reads an external topic and trashes an order marked ``explode`` (unless it is a
replay); ``fetch`` is a batch node (cursors); ``limited`` has a global rate limit and retries
through its retry topic; ``deliver`` parks keys (reads the Trash) and writes an external topic.
As an APP the topics and mode come from the environment: SEC_SRC, SEC_DST, SEC_EOS=1.
"""

from __future__ import annotations

import os

from kstream import Context, Page, Permanent, Retry, Topology

PAGES = 3  # fetch emits two items per page


def make_secured(src: str, dst: str, *, exactly_once: bool = False) -> Topology:
    topology = Topology("sec", processing="exactly_once" if exactly_once else "at_least_once")

    @topology.node("parse", source=src)
    def parse(order: dict, ctx: Context) -> dict:  # type: ignore[type-arg]
        if order.get("explode") and ctx.header("kstream-replay-of") is None:
            raise Permanent(f"order {order['id']} explodes")
        return {**order, "parsed": True}

    @topology.batch("fetch", emit="record")
    def fetch(cursor: int | None, ctx: Context) -> Page:
        page = cursor or 0
        items = [{"id": 1000 + 2 * page + i, "parsed": False} for i in range(2)]
        return Page(items=items, cursor=page + 1 if page + 1 < PAGES else None)

    @topology.node("limited", after=["parse", "fetch"], limit="erp", ordering="none", prefetch=4,
                   retry=Retry(attempts=3, backoff=0.05, jitter=0))
    def limited(order: dict) -> dict:  # type: ignore[type-arg]
        return {**order, "limited": True}

    @topology.node("deliver", after="limited", to=dst, on_failure="park_key")
    def deliver(order: dict) -> dict:  # type: ignore[type-arg]
        return order

    return topology


topology = make_secured(os.environ.get("SEC_SRC", "sec.in"), os.environ.get("SEC_DST", "sec.out"),
                        exactly_once=os.environ.get("SEC_EOS") == "1")
