"""A small HTTP "shop API" with cursor pagination, for the demo and the tests (127.0.0.1 only).

``GET /orders?after=<id>&limit=<n>`` returns ``{"items": [...], "next": <id or null>}``:
orders with an id greater than ``after``, oldest first; ``next`` is null on the last page.
``fail_every=N`` answers every Nth request with 503 (a flaky upstream); ``fail_after``
makes every request for that cursor fail (a page that keeps failing) until cleared.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse


class ShopApi:
    def __init__(self, orders: int = 0, *, fail_every: int = 0) -> None:
        self._lock = threading.Lock()
        self._orders: list[dict[str, Any]] = []
        self.fail_every = fail_every
        self.fail_after: int | None = None
        self.requests = 0
        self.failures = 0
        self.add(orders)
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                status, body = api.handle(self.path)
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def add(self, n: int) -> None:
        with self._lock:
            start = len(self._orders)
            self._orders += [{"id": start + i + 1, "sku": f"sku-{(start + i) % 17}", "qty": 1 + (start + i) % 5}
                             for i in range(n)]

    def handle(self, path: str) -> tuple[int, dict[str, Any]]:
        url = urlparse(path)
        if url.path != "/orders":
            return 404, {"error": "not found"}
        query = parse_qs(url.query)
        after = int(query.get("after", ["0"])[0] or 0)
        limit = int(query.get("limit", ["100"])[0])
        with self._lock:
            self.requests += 1
            if self.fail_every and self.requests % self.fail_every == 0:
                self.failures += 1
                return 503, {"error": "try again"}
            if self.fail_after is not None and after == self.fail_after:
                self.failures += 1
                return 503, {"error": "this page keeps failing"}
            items = [o for o in self._orders if o["id"] > after][:limit]
            more = bool(items) and items[-1]["id"] < self._orders[-1]["id"]
        return 200, {"items": items, "next": items[-1]["id"] if more else None}

    def __enter__(self) -> ShopApi:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
