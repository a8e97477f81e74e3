"""``kstream run``."""

from __future__ import annotations

import os
import signal
import threading
from types import FrameType

import click

from kstream.app import admin, build_worker, hanging_monitor, run_workers
from kstream.cli.common import Options, app_argument, pass_options, setup_logging, topology_of
from kstream.errors import NotFound
from kstream.limits import GlobalRateLimiter
from kstream.runtime.worker import Worker


def _overdue(budget: float) -> None:
    os.write(2, f"stop took longer than runtime.shutdown_timeout ({budget:g} s): exiting now; uncommitted "
                f"messages will be processed again\n".encode())
    os._exit(1)


@click.command()
@app_argument
@click.option("--node", "nodes", multiple=True, metavar="NAME", help="Run only this node (repeatable). Default: all.")
@click.option("--log-level", default="info", show_default=True, type=click.Choice(["debug", "info", "warning", "error"]))
@pass_options
def run(options: Options, app: str, nodes: tuple[str, ...], log_level: str) -> None:
    """Run workers for the nodes of APP until SIGINT/SIGTERM.

    Each node is its own consumer group ({ns}.{topology}.{node}); run the same node in several
    processes to share its partitions. On SIGINT/SIGTERM a worker stops taking messages,
    finishes the ones in hand (or abandons them uncommitted), flushes, commits what is done and
    leaves its groups, within runtime.shutdown_timeout (20 s), then exits 0. A second signal
    exits at once (code 128 + signal number): what was not committed is processed again.
    Exits 1 within 10 s, with one line, when the cluster cannot be reached or an input topic is
    missing at start; a running worker rides out an outage of up to
    runtime.broker_outage_timeout (5 min), taking no input meanwhile.
    """
    setup_logging(log_level)
    topology = topology_of(app)
    settings = options.settings()
    names = list(nodes) or topology.order()
    # One line within 10 s when the cluster cannot be reached or an input is missing, rather
    # than workers that idle: the outage handling of running workers starts once they ran.
    inputs = [topology.get(n).input_topic(settings.namespace) for n in names]
    found = admin(settings, timeout=10.0).topics(inputs)
    missing = [t for t in inputs if t not in found]
    if missing:
        raise NotFound(f"topic {missing[0]} does not exist (kstream topics apply {app} creates it)")
    stop = threading.Event()
    limiters: dict[str, GlobalRateLimiter] = {}  # one per service, shared by this process's workers
    workers = [build_worker(topology, name, settings, stop, limiters) for name in names]

    def request_stop(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():  # the second signal: leave now; uncommitted messages are redelivered
            os.write(2, b"second signal: exiting at once; uncommitted messages will be processed again\n")
            os._exit(128 + signum)
        stop.set()
        os.write(2, f"stopping ({signal.Signals(signum).name}); a second signal exits at once\n".encode())
        # The workers fit their stop in runtime.shutdown_timeout; should one hang (a handler
        # that ignores the stop, a client that does not close), the process still goes.
        budget = settings.runtime.shutdown_timeout
        watchdog = threading.Timer(budget + 2.0, _overdue, args=(budget,))
        watchdog.daemon = True
        watchdog.start()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    def rebuild(old: Worker) -> Worker:
        return build_worker(topology, old.processor.node.name, settings, stop, limiters,
                            transactional_id=old.transactional_id)

    click.echo(f"running {', '.join(names)} of {topology.name} on {settings.bootstrap_servers}", err=True)
    hanging_monitor(topology, settings, stop).start()
    run_workers(workers, stop, rebuild)
    click.echo("stopped", err=True)
