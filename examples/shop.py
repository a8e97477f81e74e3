"""Example batch topology: pull orders page by page from the shop's HTTP API into the stream.

    shop API --(pages, cursor)--> pull --> shop.orders.raw --> (examples/orders.py)

The cursor lives in the compacted cursors topic and commits with each page's records; a run
that completes keeps the last order id, so the next run fetches only orders added since.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request

from kstream import Context, Page, Retry, Topology

topology = Topology("shop")


@topology.batch("pull", emit="record", to="shop.orders.raw", retry=Retry(attempts=5, backoff=0.1, jitter=0.2))
def pull(cursor: int | None, ctx: Context) -> Page:
    """One page of the shop API; a 503 raises and the page is retried with backoff."""
    url = f"{os.environ.get('SHOP_API', 'http://127.0.0.1:8080')}/orders?after={cursor or 0}&limit=50"
    with urllib.request.urlopen(url, timeout=10) as resp:
        body = json.loads(resp.read())
    orders = [
        {"order": f"api-{o['id']}", "customer": f"c{o['id'] % 4}", "items": [["apple", o["qty"]], ["pear", 1]]}
        for o in body["items"]
    ]
    last = body["items"][-1]["id"] if body["items"] else cursor
    return Page(items=orders, cursor=body["next"], watermark=last)
