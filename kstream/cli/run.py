"""``kstream run``."""

from __future__ import annotations

import signal
import threading
from types import FrameType

import click

from kstream import logs
from kstream.app import Observer, build_worker, run_workers, tracing_of
from kstream.cli.common import Options, app_argument, pass_options, topology_of
from kstream.limits import GlobalRateLimiter
from kstream.metrics import Metrics


@click.command()
@app_argument
@click.option("--node", "nodes", multiple=True, metavar="NAME", help="Run only this node (repeatable). Default: all.")
@click.option("--log-level", default="info", show_default=True, type=click.Choice(["debug", "info", "warning", "error"]))
@click.option("--log-format", type=click.Choice(["text", "json"]),
              help="Log lines as text or one JSON object per line (default: observe.log_format, text).")
@click.option("--http-port", type=click.IntRange(0, 65535), metavar="PORT",
              help="Serve /metrics, /healthz and /readyz on this port (default: observe.http_port; off).")
@pass_options
def run(options: Options, app: str, nodes: tuple[str, ...], log_level: str, log_format: str | None,  # noqa: PLR0917
        http_port: int | None) -> None:
    """Run workers for the nodes of APP until SIGINT/SIGTERM.

    Each node is its own consumer group ({ns}.{topology}.{node}); run the same node in several
    processes to share its partitions. On SIGINT/SIGTERM a worker stops taking messages,
    finishes the one in hand (or abandons it uncommitted), commits what is done and leaves the
    group.

    With --http-port the process serves Prometheus metrics on /metrics, liveness on /healthz
    (every poll loop turned within runtime.liveness_timeout) and readiness on /readyz (the
    cluster answers, every worker runs, not shutting down). With opentelemetry-api installed
    (kstream[otel]) and a tracer provider configured (the OpenTelemetry SDK, e.g. set up by APP's
    module), every message runs in a span continued from its traceparent header; settings
    observe.tracing = "off" turns that off.
    """
    settings = options.settings()
    observe = settings.observe.model_copy(update={k: v for k, v in (("log_format", log_format), ("http_port", http_port))
                                                  if v is not None})
    settings = settings.model_copy(update={"observe": observe})
    logs.setup(log_level, observe.log_format)
    topology = topology_of(app)
    names = list(nodes) or topology.order()
    stop = threading.Event()
    limiters: dict[str, GlobalRateLimiter] = {}  # one per service, shared by this process's workers
    metrics = Metrics() if observe.http_port is not None else None
    tracing = tracing_of(settings)
    workers = [build_worker(topology, name, settings, stop, limiters, metrics=metrics, tracing=tracing) for name in names]
    observer = Observer(topology, workers, settings, metrics, stop) if metrics is not None else None

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    click.echo(f"running {', '.join(names)} of {topology.name} on {settings.bootstrap_servers}"
               + (f"; http on port {observer.port}" if observer is not None else ""), err=True)
    try:
        run_workers(workers, stop)
    finally:
        if observer is not None:
            observer.close()
    click.echo("stopped", err=True)
