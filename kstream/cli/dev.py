"""``kstream dev``: a local Apache Kafka broker and schema registry for developing and testing apps."""

from __future__ import annotations

import codecs
import io
import time
from collections import deque
from pathlib import Path
from typing import BinaryIO

import click

from kstream.config import env_name
from kstream.dev.broker import JVM_PROFILES, BrokerInfo, JvmProfile, LocalBroker, kafka_version, require_tools
from kstream.dev.registry import VERSION as REGISTRY_VERSION
from kstream.dev.registry import LocalRegistry
from kstream.dev.security import SECURITY_MODES, SUPER_USER, Security, client_properties, security_files
from kstream.errors import LocalBrokerError

EXIT_STOPPED = 3

_workdir_option = click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(".kstream/broker"),
    envvar="KSTREAM_BROKER_DIR",
    show_default=True,
    show_envvar=True,
    help="Where the broker keeps its config, data, log and state.",
)


@click.group()
def dev() -> None:
    """Tools for developing and testing kstream apps on this machine."""


@dev.group(short_help="Run a local Kafka broker for development and tests.")
def broker() -> None:
    """Run a local Apache Kafka broker for development and tests.

    One KRaft node (broker and controller) on 127.0.0.1 only, running Kafka's own jars:
    they are fetched once with Maven and cached under ~/.cache/kstream. Needs `java` 17+,
    and `mvn` for that first fetch.

    The broker keeps running after `start` returns, and keeps its topics across `stop` and
    `start`. Topics are not created on first use: declare them. Consumer group timeouts are
    short (session 6 s), so dead members are noticed quickly.

    \b
      kstream dev broker start      # prints the bootstrap address
      kstream dev broker start --security sasl_ssl   # TLS, SCRAM logins, ACLs enforced
      kstream dev broker logs -f
      kstream dev broker stop
    """


@broker.command(short_help="Start the broker, unless it runs.")
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    help="Listen here.  [default: the previous run's port, else 9092, else any free port]",
)
@click.option(
    "--security",
    type=click.Choice(SECURITY_MODES),
    help="plaintext, or sasl_ssl: TLS from a throwaway CA, SCRAM-SHA-512 logins, ACLs enforced, "
    "a super user 'admin'. Changing it formats a new cluster (topics are lost).  [default: the previous run's, else plaintext]",
)
@click.option(
    "--jvm",
    type=click.Choice(list(JVM_PROFILES)),
    default="dev",
    show_default=True,
    help="JVM options: dev starts in ~3 s and stays small (C1 only, serial GC); kafka is what Kafka's own "
    "start scripts use (C2, G1, 1 GB heap): slower to start and warm up, shorter round trips under load "
    "(what the latency benchmark runs on). A running broker keeps the options it started with.",
)
@_workdir_option
def start(port: int | None, security: Security | None, jvm: JvmProfile, workdir: Path) -> None:
    """Start the broker and print its bootstrap address, or report the one already running.

    With --security sasl_ssl it also prints the client settings of its super user (the
    password is in a file, never printed): pass --config with the settings file shown, or set
    the environment variables shown.

    Exits 0 in both cases, 1 with a one-line reason when it cannot start (then see `logs`).
    """
    local = LocalBroker(workdir, jvm=jvm)
    try:
        if not local.libs_cache.is_dir():
            require_tools()  # before the notice, so a missing tool is the only line printed
            click.echo("fetching Kafka jars with Maven (first run only)...", err=True)
        info, started = local.start(port=port, security=security)
    except LocalBrokerError as e:
        raise click.ClickException(str(e)) from None
    if started:
        click.echo(f"kafka {kafka_version()} running at {info.bootstrap} (pid {info.pid})")
    else:
        click.echo(f"already running at {info.bootstrap} (pid {info.pid})")
    if info.security != "plaintext":
        _print_client_settings(info)


def _print_client_settings(info: BrokerInfo) -> None:
    click.echo(f"security: SASL_SSL, SCRAM-SHA-512, ACLs enforced; super user {SUPER_USER!r}")
    click.echo(f"client settings (super user): kstream --config {info.client_config} ...")
    click.echo("or in the environment:")
    click.echo(f"  export KSTREAM_BOOTSTRAP_SERVERS={info.bootstrap}")
    for name, value in client_properties(security_files(info.workdir)).items():
        click.echo(f"  export {env_name(name)}={value}")


@broker.command(short_help="Stop the broker; its topics are kept.")
@_workdir_option
def stop(workdir: Path) -> None:
    """Stop the broker (SIGTERM, then SIGKILL after 30 s); its topics are kept.

    Prints "stopped", or "not running" when there was nothing to stop; exits 0 both ways.
    """
    try:
        stopped = LocalBroker(workdir).stop()
    except LocalBrokerError as e:
        raise click.ClickException(str(e)) from None
    click.echo("stopped" if stopped else "not running")


@broker.command(short_help="Tell whether the broker runs, and where.")
@_workdir_option
@click.pass_context
def status(ctx: click.Context, workdir: Path) -> None:
    """Print "running at HOST:PORT (pid N)" and exit 0, or print "stopped" and exit 3."""
    info = LocalBroker(workdir).status()
    if info is None:
        click.echo("stopped")
        ctx.exit(EXIT_STOPPED)
    click.echo(f"running at {info.bootstrap} (pid {info.pid})")
    if info.security != "plaintext":
        _print_client_settings(info)


@broker.command(short_help="Print the broker's log.")
@click.option("-n", "--lines", default=50, show_default=True, type=click.IntRange(min=0), help="How many last lines.")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines until Ctrl-C.")
@_workdir_option
def logs(lines: int, follow: bool, workdir: Path) -> None:
    """Print the end of the broker's log (since its latest start); --follow keeps printing."""
    path = LocalBroker(workdir).log_path
    try:
        with path.open("rb") as log:
            for line in deque(log, maxlen=lines) if lines else ():
                click.echo(line.decode(errors="replace"), nl=False)
            if follow:
                log.seek(0, io.SEEK_END)
                _follow(log, path)
    except FileNotFoundError:
        raise click.ClickException(f"no broker log at {path}: start the broker first") from None
    except KeyboardInterrupt:
        pass


def _follow(log: BinaryIO, path: Path) -> None:
    """Print what gets appended until Ctrl-C; a restart truncates the log, so read it anew."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    while True:
        chunk = log.read()
        if chunk:
            click.echo(decoder.decode(chunk), nl=False)
        elif path.stat().st_size < log.tell():
            log.seek(0)
        else:
            time.sleep(0.2)  # polling a file: there is nothing to wait on


_registry_dir_option = click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(".kstream/registry"),
    envvar="KSTREAM_REGISTRY_DIR",
    show_default=True,
    show_envvar=True,
    help="Where the registry keeps its log and state.",
)


@dev.group(short_help="Run a local schema registry (Apicurio) for Avro nodes.")
def registry() -> None:
    """Run a local schema registry for Avro nodes: Apicurio Registry, in memory.

    Apicurio Registry's app is fetched once from Maven Central and cached under
    ~/.cache/kstream. Needs `java` 17+, and `mvn` for that first fetch. Its schemas live in
    memory: a restart starts empty. Point kstream at the URL it prints:

    \b
      kstream dev registry start    # prints the URL (Confluent-compatible API)
      export KSTREAM_SCHEMA_REGISTRY_URL=http://127.0.0.1:8081/apis/ccompat/v7
      kstream dev registry stop
    """


@registry.command("start", short_help="Start the registry, unless it runs.")
@click.option("--port", type=click.IntRange(1, 65535),
              help="Listen here.  [default: the previous run's port, else 8081, else any free port]")
@_registry_dir_option
def registry_start(port: int | None, workdir: Path) -> None:
    """Start the registry and print its URL, or report the one already running.

    Exits 0 in both cases, 1 with a one-line reason when it cannot start.
    """
    local = LocalRegistry(workdir)
    try:
        if not (local.cache / "lib").is_dir():
            require_tools()
            click.echo("fetching Apicurio Registry with Maven (first run only)...", err=True)
        info, started = local.start(port=port)
    except LocalBrokerError as e:
        raise click.ClickException(str(e)) from None
    if started:
        click.echo(f"apicurio registry {REGISTRY_VERSION} running at {info.url} (pid {info.pid})")
    else:
        click.echo(f"already running at {info.url} (pid {info.pid})")


@registry.command("stop", short_help="Stop the registry (its schemas are lost).")
@_registry_dir_option
def registry_stop(workdir: Path) -> None:
    """Stop the registry; prints "stopped" or "not running", exits 0 both ways."""
    try:
        stopped = LocalRegistry(workdir).stop()
    except LocalBrokerError as e:
        raise click.ClickException(str(e)) from None
    click.echo("stopped" if stopped else "not running")


@registry.command("status", short_help="Tell whether the registry runs, and where.")
@_registry_dir_option
@click.pass_context
def registry_status(ctx: click.Context, workdir: Path) -> None:
    """Print "running at URL (pid N)" and exit 0, or print "stopped" and exit 3."""
    info = LocalRegistry(workdir).status()
    if info is None:
        click.echo("stopped")
        ctx.exit(EXIT_STOPPED)
    click.echo(f"running at {info.url} (pid {info.pid})")


if __name__ == "__main__":
    dev()
