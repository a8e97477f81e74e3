"""``kstream schemas show|plan|apply``: Avro schemas of a topology and the schema registry."""

from __future__ import annotations

import json
import sys

import click

from kstream.avro_topics import SchemaAction, apply, avro_topics, plan, registry_of
from kstream.cli.common import Options, app_argument, pass_options, topology_of
from kstream.config import Settings
from kstream.errors import NotFound
from kstream.kafka.registry import SchemaRegistry
from kstream.topology import Topology


@click.group()
def schemas() -> None:
    """Avro schemas of a topology's nodes, checked and registered in the schema registry.

    The registry comes from settings: schema_registry.url (env KSTREAM_SCHEMA_REGISTRY_URL).
    """


@schemas.command("show")
@app_argument
@click.argument("node", metavar="NODE")
@pass_options
def show_cmd(options: Options, app: str, node: str) -> None:
    """Print the Avro schema of NODE's input (avro=) and of its to= outputs (to_avro=), as JSON."""
    target = topology_of(app).get(node)
    shown = {"input": target.avro.schema if target.avro else None,
             "to": target.to_avro.schema if target.to_avro else None}
    if not any(shown.values()):
        raise NotFound(f"node {node!r} has no Avro input or output (declare it with avro= or to_avro=)")
    if shown["to"] is None or shown["input"] is None:
        click.echo(json.dumps(shown["input"] or shown["to"], indent=2))
    else:
        click.echo(json.dumps(shown, indent=2))


@schemas.command("plan")
@app_argument
@pass_options
def plan_cmd(options: Options, app: str) -> None:
    """Show what `apply` would register, and every change the subject's compatibility mode refuses.

    Exits 1 when a change is refused (one line each on stderr).
    """
    check_and_apply(topology_of(app), options.settings(), dry_run=True)


@schemas.command("apply")
@app_argument
@pass_options
def apply_cmd(options: Options, app: str) -> None:
    """Register the schema of every Avro topic APP writes, after checking them all.

    A subject kstream creates gets the mode of schema_registry.compatibility (BACKWARD by
    default); an existing one keeps its own. If any change is refused nothing is registered:
    one line per incompatible change on stderr, exit 1.
    """
    check_and_apply(topology_of(app), options.settings(), dry_run=False)


def check_and_apply(topology: Topology, settings: Settings, *, dry_run: bool) -> None:
    """Plan (and unless ``dry_run`` apply) the schemas of ``topology``; exit 1 on a refused change."""
    if not avro_topics(topology, settings.namespace):
        click.echo(f"topology {topology.name} has no Avro topics")
        return
    with registry_of(settings) as registry:
        _check_and_apply(topology, settings, registry, dry_run=dry_run)


def _check_and_apply(topology: Topology, settings: Settings, registry: SchemaRegistry, *, dry_run: bool) -> None:
    changes = plan(topology, settings, registry)
    refused = [line for c in changes for line in c.problems]
    for change in changes:
        if dry_run or change.action in (SchemaAction.OK, SchemaAction.EXTERNAL):
            click.echo(change.line())
    if refused:
        for line in refused:
            click.echo(f"incompatible: {line}", err=True)
        click.echo(f"error: {len(refused)} incompatible change(s); nothing registered", err=True)
        sys.exit(1)
    if dry_run:
        return
    done = apply(changes, settings, registry)
    for change in done:
        click.echo(change.line())
    click.echo(f"{len(done)} schema(s) registered, {sum(c.action is SchemaAction.OK for c in changes)} already registered")
