"""Example: an existing Faust agent run as a kstream node, the first step of a migration.

    shop.orders.raw (JSON) -> parse (kstream) -> score (the Faust agent) -> loyalty.points (JSON)

The Faust app below is what the team had; ``agent_node`` runs its ``score`` agent inside the
kstream topology, with kstream's retries and Trash around it. The Faust app is never started.

Run it:  kstream topics apply examples/faust_agent.py:topology --create-external
         kstream run examples/faust_agent.py:topology
"""

from __future__ import annotations

import os
from typing import Any

import faust

from kstream import Retry, Topology
from kstream.faust_agent import agent_node

app = faust.App("shop-loyalty", broker="kafka://127.0.0.1:9092", web_enabled=False)


class Order(faust.Record, serializer="json"):
    id: str
    customer: str
    amount: float


class UnknownCustomer(Exception):
    pass


@app.agent(app.topic("shop.orders", value_type=Order))
async def score(orders):  # type: ignore[no-untyped-def]  (Faust agents are untyped)
    """One point per whole euro; orders of unknown customers fail (and go to kstream's Trash)."""
    async for order in orders:
        if not order.customer:
            raise UnknownCustomer(f"order {order.id} has no customer")
        yield {"customer": order.customer, "order": order.id, "points": int(order.amount)}


def make_topology(source: str, points: str) -> Topology:
    topology = Topology("loyalty")

    @topology.node("parse", source=source)
    def parse(raw: dict[str, Any]) -> dict[str, Any]:
        return {"id": str(raw["order"]), "customer": raw.get("customer", ""), "amount": float(raw["total"])}

    agent_node(topology, "score", score, after="parse", to=points, key=lambda order: order["customer"],
               retry=Retry(attempts=3, backoff=0.2))
    return topology


topology = make_topology(os.environ.get("LOYALTY_SRC", "shop.orders.raw"), os.environ.get("LOYALTY_DST", "loyalty.points"))
