"""``kstream topics plan|apply``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from kstream.app import admin
from kstream.cli.common import Options, app_argument, pass_options, topology_of
from kstream.cli.schemas import check_and_apply
from kstream.provision import Action, apply, durability_warnings, plan


@click.group()
def topics() -> None:
    """Compare and create the Kafka topics a topology needs."""


def _options(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = click.option("--grow-partitions", is_flag=True, help="Add partitions where settings want more (keys move!).")(fn)
    fn = click.option("--create-external", is_flag=True, help="Also create missing source=/to= topics.")(fn)
    return app_argument(fn)


@topics.command("plan")
@_options
@pass_options
def plan_cmd(options: Options, app: str, grow_partitions: bool, create_external: bool) -> None:
    """Show what `apply` would create or change for APP, drift it will not fix, and state topics
    (Trash, cursors, status) with too few replicas for the cluster (warnings on stderr)."""
    settings = options.settings()
    client = admin(settings)
    changes = plan(topology_of(app), settings, client, grow=grow_partitions, create_external=create_external)
    for change in changes:
        click.echo(change.line())
    for warning in durability_warnings(settings, client):
        click.echo(f"warning: {warning}", err=True)


@topics.command("apply")
@_options
@click.option("--schemas", "with_schemas", is_flag=True,
              help="First check and register the Avro schemas (as `kstream schemas apply`); a refused one stops here.")
@pass_options
def apply_cmd(options: Options, app: str, grow_partitions: bool, create_external: bool, with_schemas: bool) -> None:
    """Create every topic APP needs (idempotent): node inputs, Trash and cursors (compacted)."""
    settings = options.settings()
    if with_schemas:
        check_and_apply(topology_of(app), settings, dry_run=False)
    client = admin(settings)
    changes = plan(topology_of(app), settings, client, grow=grow_partitions, create_external=create_external)
    done = apply(changes, client)
    for change in done:
        click.echo(change.line())
    for change in changes:
        if change.action in (Action.DRIFT, Action.EXTERNAL_MISSING):
            click.echo(change.line(), err=True)
    for warning in durability_warnings(settings, client):
        click.echo(f"warning: {warning}", err=True)
    click.echo(f"{len(done)} change(s) applied, {sum(c.action is Action.OK for c in changes)} topic(s) already as wanted")
