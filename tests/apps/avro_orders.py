"""Avro topologies of the integration tests, built per test (topics come from the arguments).

``make_orders``: JSON from ``src`` -> ``ingest`` -> ``score`` (reads Avro: ``avro=True``) ->
``dst`` (Avro: ``to_avro=Scored``). ``make_evolving``: ``write`` -> ``read`` (Avro) -> ``out``
(JSON), in two versions of the ``read`` schema, for evolution both ways.
"""

from __future__ import annotations

import os
from typing import Any

from pydantic import BaseModel, ConfigDict

from kstream import Permanent, Topology


class Order(BaseModel):
    """An order as ingested."""

    id: str
    qty: int
    price: float


class Scored(BaseModel):
    id: str
    total: float
    big: bool


def make_orders(src: str, dst: str, name: str = "avro") -> Topology:
    topology = Topology(name)

    @topology.node("ingest", source=src)
    def ingest(order: dict) -> Order:  # type: ignore[type-arg]
        return Order(id=str(order["id"]), qty=int(order["qty"]), price=float(order["price"]))

    @topology.node("score", after="ingest", avro=True, to=dst, to_avro=Scored)
    def score(order: Order) -> Scored:
        if order.qty <= 0:
            raise Permanent(f"order {order.id}: qty must be positive, got {order.qty}")
        total = round(order.qty * order.price, 2)
        return Scored(id=order.id, total=total, big=total >= 100)

    return topology


class OrderV1(BaseModel):
    model_config = ConfigDict(title="Order")  # one record name across versions
    id: str
    qty: int


class OrderV2(BaseModel):
    model_config = ConfigDict(title="Order")
    id: str
    qty: int
    note: str | None = None


class OrderV3(BaseModel):
    """Incompatible with V2: qty changes type, and a required field appears."""

    model_config = ConfigDict(title="Order")

    id: str
    qty: str
    region: str


def make_evolving(src: str, out: str, version: int, name: str = "evo") -> Topology:
    model = {1: OrderV1, 2: OrderV2, 3: OrderV3}[version]
    topology = Topology(name)

    @topology.node("write", source=src)
    def write(order: dict) -> dict:  # type: ignore[type-arg]
        return order

    @topology.node("read", after="write", avro=model, to=out)
    def read(order: Any) -> dict:  # type: ignore[type-arg]  (gets the avro= model)
        return {"version": version, **order.model_dump()}

    return topology


topology = make_orders(os.environ.get("AVRO_SRC", "avro.in"), os.environ.get("AVRO_DST", "avro.out"))
evolving = make_evolving(os.environ.get("AVRO_SRC", "avro.in"), os.environ.get("AVRO_DST", "avro.out"),
                         int(os.environ.get("AVRO_VERSION", "1")))
