"""Example topology: shop orders -> parse -> price -> deliver -> ERP.

    shop.orders.raw (external) -> parse -> price -> deliver -> erp.orders (external)

Run it:  kstream topics apply examples/orders.py:topology --create-external
         kstream run examples/orders.py:topology
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from kstream import Context, Permanent, Retry, Topology

PRICES = {"apple": 0.5, "pear": 0.75, "plum": 0.3, "kiwi": 0.9}


class Line(BaseModel):
    sku: str
    qty: int = Field(gt=0)


class Order(BaseModel):
    id: str
    customer: str
    lines: list[Line]
    total: float | None = None


topology = Topology("orders")


@topology.node("parse", source="shop.orders.raw")
def parse(raw: dict, ctx: Context) -> dict:  # type: ignore[type-arg]
    """Normalise the shop's format: {"order": id, "customer": ..., "items": [[sku, qty], ...]}."""
    ctx.log.debug("parsing %s", raw.get("order"))
    return {
        "id": str(raw["order"]),
        "customer": raw["customer"],
        "lines": [{"sku": sku, "qty": qty} for sku, qty in raw["items"]],
    }


@topology.node("price", after="parse", key=lambda order: order["customer"], retry=Retry(attempts=3, backoff=0.2))
def price(order: Order) -> Order:
    """Price every line; an unknown SKU cannot be fixed by retrying."""
    unknown = [line.sku for line in order.lines if line.sku not in PRICES]
    if unknown:
        raise Permanent(f"order {order.id}: unknown sku {', '.join(unknown)}")
    order.total = round(sum(PRICES[line.sku] * line.qty for line in order.lines), 2)
    return order


@topology.node("deliver", after="price", to="erp.orders")
async def deliver(order: Order) -> dict:  # type: ignore[type-arg]
    """Shape the order for the ERP (an async handler: real code would await an API here)."""
    return {"erp_order": order.id, "customer": order.customer, "amount": order.total}
