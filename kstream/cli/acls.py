"""``kstream acls plan|apply``: the least Kafka rights of each node (:mod:`kstream.acls`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from kstream.acls import Acl, plan
from kstream.app import admin
from kstream.cli.common import Options, app_argument, pass_options, topology_of


@click.group()
def acls() -> None:
    """The Kafka ACLs each node of a topology needs, and nothing more.

    A node reads its input, retry topic and consumer group and writes its outputs, the Trash
    and the status topic; batch nodes also the cursors, park_key nodes read the Trash, limited
    nodes publish and read share claims on {ns}.limits, exactly-once nodes use transactional ids {group}.*.
    """


def _options(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = click.option("--principal", metavar="User:NAME",
                      help="Grant to this principal.  [default: one per node, User:{ns}.{topology}.{node}]")(fn)
    fn = click.option("--node", "nodes", multiple=True, metavar="NAME", help="Only this node (repeatable). Default: all.")(fn)
    return app_argument(fn)


def _planned(options: Options, app: str, nodes: tuple[str, ...], principal: str | None) -> list[Acl]:
    if principal is not None and ":" not in principal:
        raise click.BadParameter(f"{principal!r} is not TYPE:NAME (e.g. User:orders)", param_hint="--principal")
    topology = topology_of(app)
    for name in nodes:
        topology.get(name)  # an unknown node is one clear line
    return plan(topology, options.settings(), list(nodes) or None, principal)


@acls.command("plan")
@_options
@pass_options
def plan_cmd(options: Options, app: str, nodes: tuple[str, ...], principal: str | None) -> None:
    """Print the ACL bindings the nodes of APP need, one per line (connects to nothing)."""
    for acl in _planned(options, app, nodes, principal):
        click.echo(acl.line())


@acls.command("apply")
@_options
@pass_options
def apply_cmd(options: Options, app: str, nodes: tuple[str, ...], principal: str | None) -> None:
    """Create the ACL bindings of `plan` that do not exist yet (idempotent; removes nothing).

    Needs a principal allowed to create ACLs (ALTER on the cluster, or a super user).
    """
    wanted = _planned(options, app, nodes, principal)
    client = admin(options.settings())
    existing = set(client.acls())
    missing = [acl for acl in wanted if acl.key not in existing]
    client.create_acls([acl.key for acl in missing])
    for acl in missing:
        click.echo(f"created {acl.line()}")
    click.echo(f"{len(missing)} ACL(s) created, {len(wanted) - len(missing)} already present")
