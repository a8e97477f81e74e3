"""``kstream run``."""

from __future__ import annotations

import signal
import threading
from types import FrameType

import click

from kstream.app import admin, build_worker, hanging_monitor, run_workers
from kstream.cli.common import Options, app_argument, pass_options, setup_logging, topology_of
from kstream.errors import NotFound
from kstream.limits import GlobalRateLimiter
from kstream.provision import missing_inputs
from kstream.runtime.worker import Worker


@click.command()
@app_argument
@click.option("--node", "nodes", multiple=True, metavar="NAME", help="Run only this node (repeatable). Default: all.")
@click.option("--log-level", default="info", show_default=True, type=click.Choice(["debug", "info", "warning", "error"]))
@pass_options
def run(options: Options, app: str, nodes: tuple[str, ...], log_level: str) -> None:
    """Run workers for the nodes of APP until SIGINT/SIGTERM.

    Each node is its own consumer group ({ns}.{topology}.{node}); run the same node in several
    processes to share its partitions. On SIGINT/SIGTERM a worker stops taking messages,
    finishes the one in hand (or abandons it uncommitted), commits what is done and leaves the
    group.
    """
    topology = topology_of(app)
    settings = options.settings()
    names = list(nodes) or topology.order()
    for name in names:
        topology.get(name)  # an unknown --node: one line before anything connects
    missing = missing_inputs(topology, names, settings, admin(settings))
    if missing:
        raise NotFound(f"input topic {', '.join(missing)} does not exist: run `kstream topics apply {app}` first "
                       "(with --create-external for source= topics)")
    setup_logging(log_level)  # after the checks: their failure is one line, without librdkafka's
    stop = threading.Event()
    limiters: dict[str, GlobalRateLimiter] = {}  # one per service, shared by this process's workers
    workers = [build_worker(topology, name, settings, stop, limiters) for name in names]

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    def rebuild(old: Worker) -> Worker:
        return build_worker(topology, old.processor.node.name, settings, stop, limiters,
                            transactional_id=old.transactional_id)

    click.echo(f"running {', '.join(names)} of {topology.name} on {settings.bootstrap_servers}", err=True)
    hanging_monitor(topology, settings, stop).start()
    run_workers(workers, stop, rebuild)
    click.echo("stopped", err=True)
