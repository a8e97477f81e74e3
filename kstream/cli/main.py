"""``kstream``: the root command and its global options."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import click

from kstream.cli.acls import acls
from kstream.cli.common import KstreamGroup, Options
from kstream.cli.console import console
from kstream.cli.cursors import cursors
from kstream.cli.dev import dev
from kstream.cli.graph import graph
from kstream.cli.helm import helm
from kstream.cli.lag import lag
from kstream.cli.run import run
from kstream.cli.schemas import schemas
from kstream.cli.start import start
from kstream.cli.topics import topics
from kstream.cli.trash import trash
from kstream.cli.txns import txns
from kstream.cli.workflows import serve, workflows
from kstream.config import env_name, is_secret


def _kafka_props(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> dict[str, str]:
    props = {}
    for item in values:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"{item!r} is not PROP=VALUE", ctx=ctx, param=param)
        props[name.strip()] = value
    return props


@click.group(cls=KstreamGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config", type=click.Path(path_type=Path), envvar="KSTREAM_CONFIG",
              help="TOML settings file (env KSTREAM_CONFIG).")
@click.option("--bootstrap", "-b", help="Kafka bootstrap servers (env KSTREAM_BOOTSTRAP_SERVERS; "
              "default: the local dev broker if it runs here, else 127.0.0.1:9092).")
@click.option("--namespace", "-n", help="Prefix of every kstream topic and group (env KSTREAM_NAMESPACE; default kstream).")
@click.option("-X", "kafka", multiple=True, callback=_kafka_props, metavar="PROP=VALUE",
              help="librdkafka property for every client (repeatable).")
@click.version_option(package_name="kstream")
@click.pass_context
def cli(ctx: click.Context, config: Path | None, bootstrap: str | None, namespace: str | None,
        kafka: dict[str, str]) -> None:
    """kstream: integrations and pipelines as topologies of nodes connected by Kafka topics.

    APP arguments name a Topology as module:attr or path/to/file.py:attr.
    Exit codes: 0 ok, 1 failure, 2 usage error.
    """
    ctx.obj = Options(config=config, bootstrap=bootstrap, namespace=namespace, kafka=kafka)
    # librdkafka's log lines are for `run --log-level` (its handler); elsewhere an error is one line.
    logging.getLogger("kstream.librdkafka").addHandler(logging.NullHandler())


cli.add_command(dev)
cli.add_command(topics)
cli.add_command(run)
cli.add_command(graph)
cli.add_command(trash)
cli.add_command(start)
cli.add_command(cursors)
cli.add_command(lag)
cli.add_command(txns)
cli.add_command(schemas)
cli.add_command(serve)
cli.add_command(workflows)
cli.add_command(console)
cli.add_command(acls)
cli.add_command(helm)


def hide_secrets(argv: list[str], env: dict[str, str]) -> list[str]:
    """``argv`` without ``-X prop=secret`` options, whose values move into ``env`` (as
    ``KSTREAM_KAFKA_<PROP>``): every local user can read a process's argv, only its owner its
    environment. Later options win, as they would on the command line."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        item = argv[i]
        if item == "--":
            return out + argv[i:]
        value = argv[i + 1] if item == "-X" and i + 1 < len(argv) else item[2:] if item.startswith("-X") else None
        name, sep, secret = (value or "").partition("=")
        name = name.strip()
        if sep and is_secret(name):
            env[env_name(name)] = secret
            # X and X.file replace each other (kstream.config): the older one must not remain.
            env.pop(env_name(name.removesuffix(".file") if name.endswith(".file") else name + ".file"), None)
            i += 2 if item == "-X" else 1
            continue
        out.append(item)
        i += 1
    return out


def _limit_malloc_arenas(env: dict[str, str], argv: list[str]) -> bool:
    """glibc gives each thread that allocates its own malloc arena; a worker's handler, poll
    and librdkafka threads then fragment memory and hold more of it (``bench.memory``: results
    ``memory.json`` with the limit, ``memory-no-arena-limit.json`` without). glibc reads it at start, so
    ``kstream run`` re-executes itself once with it set, unless the environment already says
    otherwise. Process-wide, so done here, at the edge. True if ``env`` was changed."""
    if env.get("MALLOC_ARENA_MAX") or not sys.platform.startswith("linux") or "run" not in argv:
        return False
    env["MALLOC_ARENA_MAX"] = "2"
    return True


def main() -> None:
    env, argv = dict(os.environ), sys.argv[1:]
    hidden = hide_secrets(argv, env)
    if _limit_malloc_arenas(env, hidden) or hidden != argv:
        # The same pid, a new argv: /proc/PID/cmdline (ps) no longer shows a secret.
        os.execve(sys.executable, [sys.executable, "-m", "kstream.cli.main", *hidden], env)  # noqa: S606
    cli(prog_name="kstream")


if __name__ == "__main__":
    main()
