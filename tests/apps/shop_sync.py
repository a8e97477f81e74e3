"""A batch topology pulling orders from the shop API (examples/shop_api.py), page by page.

As an APP the API address, topics and mode come from the environment: SHOP_URL, SHOP_DST,
SHOP_EMIT (record | page | N), SHOP_EOS=1 for exactly-once.
"""

from __future__ import annotations

import json
import os
import time
import urllib.request
from typing import Any

from kstream import Context, Page, Retry, Topology


def make_shop_sync(url: str, dst: str, *, emit: Any = "record", exactly_once: bool = False,
                   attempts: int = 4, delay: float = 0.0) -> Topology:
    topology = Topology("shop", processing="exactly_once" if exactly_once else "at_least_once")

    @topology.batch("fetch", emit=emit, to=dst, retry=Retry(attempts=attempts, backoff=0.05, jitter=0))
    def fetch(cursor: int | None, ctx: Context) -> Page:
        time.sleep(delay)  # a slow source, so a test can kill the worker mid-run
        with urllib.request.urlopen(f"{url}/orders?after={cursor or 0}&limit=100", timeout=10) as resp:
            body = json.loads(resp.read())
        items = body["items"]
        watermark = items[-1]["id"] if items else cursor
        return Page(items=items, cursor=body["next"], watermark=watermark)

    return topology


def _emit(value: str) -> Any:
    return int(value) if value.isdigit() else value


topology = make_shop_sync(os.environ.get("SHOP_URL", "http://127.0.0.1:1"), os.environ.get("SHOP_DST", "shop.out"),
                          emit=_emit(os.environ.get("SHOP_EMIT", "record")), exactly_once=os.environ.get("SHOP_EOS") == "1",
                          delay=float(os.environ.get("SHOP_DELAY", "0")))
