"""A 3-node chain used by the integration tests: source topic -> parse -> enrich -> deliver -> dest topic.

Run as an APP (``tests/apps/chain.py:topology``) the external topics come from the
environment (CHAIN_SRC, CHAIN_DST), so each test uses its own.
"""

from __future__ import annotations

import os

from pydantic import BaseModel

from kstream import Context, Topology


class Order(BaseModel):
    id: int
    key: str
    seq: int
    amount: float
    parsed: bool = False
    total: float = 0.0


def make_chain(src: str, dst: str, name: str = "chain", *, exactly_once: bool = False) -> Topology:
    topology = Topology(name, processing="exactly_once" if exactly_once else "at_least_once")

    @topology.node("parse", source=src)
    def parse(order: dict, ctx: Context) -> dict:  # type: ignore[type-arg]
        if order.get("explode"):
            raise RuntimeError(f"cannot parse order {order['id']}")
        return {**order, "parsed": True}

    @topology.node("enrich", after="parse")
    def enrich(order: Order) -> Order:
        return order.model_copy(update={"total": round(order.amount * 1.2, 2)})

    @topology.node("deliver", after="enrich", to=dst)
    async def deliver(order: Order) -> dict:  # type: ignore[type-arg]
        return {"id": order.id, "key": order.key, "seq": order.seq, "total": order.total, "parsed": order.parsed}

    return topology


topology = make_chain(os.environ.get("CHAIN_SRC", "chain.in"), os.environ.get("CHAIN_DST", "chain.out"),
                      exactly_once=os.environ.get("CHAIN_EOS") == "1")
