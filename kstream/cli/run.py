"""``kstream run``."""

from __future__ import annotations

import logging
import os
import signal
import threading
from types import FrameType

import click

from kstream import logs
from kstream.app import Observer, admin, build_worker, hanging_monitor, run_workers, tracing_of
from kstream.cli.common import Options, app_argument, pass_options, topology_of
from kstream.errors import NotFound
from kstream.limits import GlobalRateLimiter
from kstream.metrics import Metrics
from kstream.provision import input_topics
from kstream.runtime.worker import Worker

log = logging.getLogger("kstream.run")


def _overdue(budget: float) -> None:
    log.error("stop took longer than runtime.shutdown_timeout (%g s): exiting now; uncommitted messages will be "
              "processed again", budget)
    os._exit(1)


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
    finishes the ones in hand (or abandons them uncommitted), flushes, commits what is done and
    leaves its group (and gives its rate-limit share up), within runtime.shutdown_timeout (20 s), then exits 0. A second signal
    exits at once (code 128 + signal number): what was not committed is processed again.
    Exits 1 within 10 s, with one line, when the cluster cannot be reached or an input topic is
    missing at start; a running worker rides out an outage of up to
    runtime.broker_outage_timeout (5 min), taking no input meanwhile.

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
    topology = topology_of(app)
    names = list(nodes) or topology.order()
    # One line within 10 s when the cluster cannot be reached or an input is missing, rather
    # than workers that idle: the outage handling of running workers starts once they ran.
    # Metadata only (no DESCRIBE_CONFIGS right needed); before logging is set up, so a failure
    # is the one error line without librdkafka's own.
    for name in names:
        topology.get(name)  # an unknown --node: one line before anything connects
    inputs = [t for n in names for t in input_topics(topology, n, settings.namespace)]
    found = admin(settings, timeout=10.0).existing(inputs)
    missing = [t for t in inputs if t not in found]
    if missing:
        raise NotFound(f"input topic {', '.join(missing)} does not exist: run `kstream topics apply {app}` first "
                       "(with --create-external for source= topics)")
    logs.setup(log_level, observe.log_format)
    stop = threading.Event()
    limiters: dict[str, GlobalRateLimiter] = {}  # one per service, shared by this process's workers
    metrics = Metrics() if observe.http_port is not None else None
    tracing = tracing_of(settings)
    workers = [build_worker(topology, name, settings, stop, limiters, metrics=metrics, tracing=tracing) for name in names]
    observer = Observer(topology, workers, settings, metrics, stop) if metrics is not None else None

    def rebuild(old: Worker) -> Worker:
        return build_worker(topology, old.processor.node.name, settings, stop, limiters, metrics=metrics,
                            tracing=tracing, transactional_id=old.transactional_id)

    def request_stop(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():  # the second signal: leave now; uncommitted messages are redelivered
            log.warning("second signal: exiting at once; uncommitted messages will be processed again")
            os._exit(128 + signum)
        stop.set()
        log.warning("stopping (%s); a second signal exits at once", signal.Signals(signum).name)
        # The workers fit their stop in runtime.shutdown_timeout; should one hang (a handler
        # that ignores the stop, a client that does not close), the process still goes.
        budget = settings.runtime.shutdown_timeout
        watchdog = threading.Timer(budget + 2.0, _overdue, args=(budget,))
        watchdog.daemon = True
        watchdog.start()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    click.echo(f"running {', '.join(names)} of {topology.name} on {settings.bootstrap_servers}"
               + (f"; http on port {observer.port}" if observer is not None else ""), err=True)
    hanging_monitor(topology, settings, stop, metrics).start()
    try:
        run_workers(workers, stop, rebuild)
    finally:
        if observer is not None:
            observer.close()
    click.echo("stopped", err=True)
