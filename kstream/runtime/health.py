"""The worker process's HTTP endpoint: ``/metrics``, ``/healthz`` and ``/readyz``.

* ``/healthz`` (liveness): every worker's poll loop turned within ``runtime.liveness_timeout``.
  A handler may run for hours, the loop still turns (strategy contract), so a failing liveness
  means a stuck process: restart it.
* ``/readyz`` (readiness): the cluster answers the probe, every worker runs (subscribed:
  partitions assigned or waiting for an assignment) and nothing is shutting down. It turns
  false while the cluster is unreachable and back when it returns.

The probe is :class:`ClusterWatch`: every ``observe.probe_interval`` seconds it reads each
node's committed and end offsets with the same call as ``kstream lag`` (:func:`kstream.lag.node_lag`)
and publishes them as the lag metrics; the read failing with
:class:`kstream.errors.BrokerUnavailable` is what "unreachable" means. Both run on their own
daemon threads; nothing here touches a worker's consumer (it is not thread-safe).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from kstream.errors import BrokerUnavailable, KstreamError
from kstream.kafka.port import Admin
from kstream.lag import node_lag
from kstream.metrics import CONTENT_TYPE, Metrics
from kstream.runtime.worker import State, Worker
from kstream.topology import Topology

log = logging.getLogger("kstream.health")


class ClusterWatch:
    """Reads the lag of the process's nodes every ``interval`` seconds (see the module doc)."""

    def __init__(self, admin: Admin, topology: Topology, nodes: Sequence[str], namespace: str, metrics: Metrics, *,
                 interval: float) -> None:
        self._admin = admin
        self._topology = topology
        self._nodes = list(nodes)
        self._namespace = namespace
        self._metrics = metrics
        self._interval = interval
        self._closed = threading.Event()
        self.reachable: bool | None = None
        """None until the first probe answered or failed."""
        self._thread = threading.Thread(target=self._run, name="kstream-cluster-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._closed.set()

    def probe(self) -> None:
        """One reading: lag metrics of every node, and whether the cluster answered."""
        try:
            for name in self._nodes:
                parts = node_lag(self._admin, self._topology, name, self._namespace)
                self._metrics.set_lag(self._topology.name, name,
                                      {(p.topic, p.partition): (p.committed, p.end) for p in parts})
        except BrokerUnavailable as exc:
            if self.reachable is not False:
                log.warning("cluster unreachable: %s", exc)
            self._set(False)
            return
        except KstreamError as exc:  # it answered, with an error: reachable, lag unknown this time
            log.warning("reading consumer lag failed: %s", exc)
        if self.reachable is False:
            log.info("cluster reachable again")
        self._set(True)

    def _set(self, reachable: bool) -> None:
        self.reachable = reachable
        self._metrics.set_reachable(reachable)

    def _run(self) -> None:
        while not self._closed.is_set():
            self.probe()
            self._closed.wait(self._interval)


class Health:
    """Liveness and readiness of the workers of one process, each as (ok, reason)."""

    def __init__(self, workers: Sequence[Worker], stop: threading.Event, watch: ClusterWatch | None, *,
                 liveness_timeout: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._workers = workers  # not copied: a replaced worker takes its predecessor's place in it
        self._stop = stop
        self._watch = watch
        self._timeout = liveness_timeout
        self._clock = clock

    def live(self) -> tuple[bool, str]:
        now = self._clock()
        for w in self._workers:
            if w.state is State.FAILED:
                return False, f"{w.name} failed"
            if w.state is State.RUNNING and now - w.last_turn > self._timeout:
                return False, f"{w.name}: poll loop stuck for {now - w.last_turn:.0f} s"
        return True, "ok"

    def ready(self) -> tuple[bool, str]:
        if self._stop.is_set():
            return False, "shutting down"
        for w in self._workers:
            if w.state is not State.RUNNING:
                return False, f"{w.name} is {w.state.value}"
        if self._watch is not None and not self._watch.reachable:
            return False, "cluster unreachable" if self._watch.reachable is False else "cluster not probed yet"
        return True, "ok"


class HttpEndpoint:
    """``/metrics``, ``/healthz``, ``/readyz`` on ``host:port`` (port 0: any free one, see ``port``)."""

    def __init__(self, metrics: Metrics, health: Health, *, host: str, port: int) -> None:
        routes: dict[str, Callable[[], tuple[int, str, bytes]]] = {
            "/metrics": lambda: (HTTPStatus.OK, CONTENT_TYPE, metrics.render()),
            "/healthz": lambda: _check(health.live()),
            "/readyz": lambda: _check(health.ready()),
        }

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                route = routes.get(self.path.split("?", 1)[0])
                status, kind, body = route() if route is not None else (HTTPStatus.NOT_FOUND, "text/plain", b"not found\n")
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                return None  # a scrape every few seconds is not worth a log line

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, name="kstream-http", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _check(result: tuple[bool, str]) -> tuple[int, str, bytes]:
    ok, reason = result
    return (HTTPStatus.OK if ok else HTTPStatus.SERVICE_UNAVAILABLE), "text/plain", f"{reason}\n".encode()
