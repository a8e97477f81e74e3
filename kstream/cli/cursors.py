"""``kstream cursors list|get|set|reset``: the batch cursors of design.md s.6.

Cursor states live on the compacted ``{ns}.cursors`` topic, key ``{topology}/{node}/{scope}``.
``set`` writes a new state whose ``last_cursor`` is where the next run of the scope starts;
``reset`` writes a tombstone, so the next run is a full sync (a worker's cursor cache drops a
scope gone from the topic when the next run begins). Writes are flushed before a command
returns.

Both refuse while a run of the scope is in progress: the worker paging it keeps its own state
and would write over the change with its next page. ``--force`` writes anyway, which is how a
run that can never finish (its page discarded from the Trash) is abandoned: the next entry
message then starts a new run instead of being skipped.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import click

from kstream.app import admin, cursor_reader, producer
from kstream.batch import CursorCodec, CursorState, cursor_key, read_cursors
from kstream.cli.common import Options, app_argument, pass_options, topology_of
from kstream.cli.progress import ProgressLine
from kstream.config import Settings
from kstream.errors import BrokerError, ConfigError, NotFound
from kstream.kafka.port import Producer
from kstream.topology import Node, Topology

READ_TIMEOUT = 30.0
FLUSH_TIMEOUT = 30.0


@click.group()
def cursors() -> None:
    """Inspect, move and reset the cursors of batch nodes (delta sync)."""


def _batch_node(topology: Topology, name: str) -> Node:
    node = topology.get(name)
    if node.batch is None:
        raise ConfigError(f"node {name!r} of topology {topology.name!r} is not a batch node: it has no cursors")
    return node


def _batch_nodes(topology: Topology) -> list[str]:
    return [n for n in topology.order() if topology.nodes[n].batch is not None]


def _states(settings: Settings, topology: Topology, node: str | None = None) -> list[CursorState]:
    reading = ProgressLine(f"reading {settings.cursors_topic}")
    try:
        states = read_cursors(cursor_reader(settings), settings.cursors_topic, topology=topology.name, node=node,
                              timeout=READ_TIMEOUT, progress=reading)
    finally:
        reading.close()
    order = {n: i for i, n in enumerate(topology.order())}
    return sorted(states, key=lambda s: (order.get(s.node, len(order)), s.scope))


def _scope_state(settings: Settings, topology: Topology, node: str, scope: str) -> tuple[CursorState | None, list[str]]:
    states = _states(settings, topology, node)
    found = next((s for s in states if s.scope == scope), None)
    return found, [s.scope for s in states]


def _unknown_scope(topology: Topology, node: str, scope: str, scopes: list[str]) -> NotFound:
    known = f"scopes: {', '.join(_scope_text(s) for s in scopes)}" if scopes else "no scope has a cursor yet"
    return NotFound(f"{topology.name}/{node} has no cursor for scope {_scope_text(scope)} ({known})")


def _scope_text(scope: str) -> str:
    return json.dumps(scope)


def _iso(when: datetime | None) -> str | None:
    return None if when is None else when.isoformat(timespec="milliseconds")


def _as_json(s: CursorState) -> dict[str, Any]:
    return {
        "topology": s.topology, "node": s.node, "scope": s.scope, "running": s.run is not None, "run": s.run,
        "cursor": s.cursor, "last_cursor": s.last_cursor, "pages": s.pages, "items": s.items,
        "updated": _iso(s.updated), "completed": _iso(s.completed),
    }


def _value(value: Any) -> str:
    return "-" if value is None else json.dumps(value)


def _write(settings: Settings, records: list[tuple[str, bytes | None]]) -> None:
    """Produce cursor records (None: a tombstone) and wait until the broker acknowledged them."""
    if settings.cursors_topic not in admin(settings).topics([settings.cursors_topic]):
        raise ConfigError(f"topic {settings.cursors_topic} does not exist: run `kstream topics apply APP` first")
    prod: Producer = producer(settings)
    for key, value in records:
        prod.produce(settings.cursors_topic, value, key.encode(), None)
    left = prod.flush(FLUSH_TIMEOUT)
    errors = prod.take_errors()
    if errors:
        raise BrokerError(errors[0])
    if left:
        raise BrokerError(f"{left} cursor record(s) not acknowledged by the broker within {FLUSH_TIMEOUT:g} s")


def _refuse_running(state: CursorState | None, force: bool, what: str) -> None:
    if state is not None and state.run is not None and not force:
        raise ConfigError(
            f"{state.topology}/{state.node} scope {_scope_text(state.scope)}: run {state.run} is in progress "
            f"(page {state.pages}); {what} refused (--force abandons the run)")


@cursors.command("list")
@app_argument
@click.option("--node", help="Only this batch node.")
@click.option("--json", "as_json", is_flag=True, help="Print the states as JSON.")
@pass_options
def list_cmd(options: Options, app: str, node: str | None, as_json: bool) -> None:
    """Every scope of every batch node of APP: run in progress, cursors, pages, items, times."""
    topology = topology_of(app)
    if node is not None:
        _batch_node(topology, node)
    names = [node] if node is not None else _batch_nodes(topology)
    states = [s for s in _states(options.settings(), topology, node) if s.node in names]
    if as_json:
        click.echo(json.dumps([_as_json(s) for s in states], indent=2))
        return
    if not names:
        click.echo(f"topology {topology.name!r} has no batch nodes")
        return
    rows = [("NODE", "SCOPE", "RUN", "CURSOR", "LAST_CURSOR", "PAGES", "ITEMS", "UPDATED", "COMPLETED")]
    for s in states:
        rows.append((s.node, _scope_text(s.scope), s.run or "-", _value(s.cursor), _value(s.last_cursor), str(s.pages),
                     str(s.items), _iso(s.updated) or "-", _iso(s.completed) or "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    for n in names:
        if not any(s.node == n for s in states):
            click.echo(f"{n}: no cursors yet (no run has written one)")


@cursors.command("get")
@app_argument
@click.argument("node", metavar="NODE")
@click.option("--scope", default="", show_default=True, help="The scope (the entry message's key).")
@click.option("--json", "as_json", is_flag=True, help="Print the state as JSON.")
@pass_options
def get_cmd(options: Options, app: str, node: str, scope: str, as_json: bool) -> None:
    """One scope's cursor state."""
    topology = topology_of(app)
    _batch_node(topology, node)
    state, scopes = _scope_state(options.settings(), topology, node, scope)
    if state is None:
        raise _unknown_scope(topology, node, scope, scopes)
    if as_json:
        click.echo(json.dumps(_as_json(state), indent=2))
        return
    click.echo(f"key:          {state.key}")
    click.echo(f"run:          {state.run or '- (no run in progress)'}")
    click.echo(f"cursor:       {_value(state.cursor)}")
    click.echo(f"last_cursor:  {_value(state.last_cursor)}")
    click.echo(f"pages:        {state.pages}")
    click.echo(f"items:        {state.items}")
    click.echo(f"updated:      {_iso(state.updated)}")
    click.echo(f"completed:    {_iso(state.completed) or '-'}")


@cursors.command("set")
@app_argument
@click.argument("node", metavar="NODE")
@click.option("--cursor", "cursor_json", required=True, metavar="JSON",
              help="Where the next run starts (its last_cursor), as JSON: 500, '\"2024-01-01\"', null.")
@click.option("--scope", default="", show_default=True, help="The scope (created if it has no cursor yet).")
@click.option("--force", is_flag=True, help="Write even while a run of the scope is in progress (abandons it).")
@pass_options
def set_cmd(options: Options, *, app: str, node: str, cursor_json: str, scope: str, force: bool) -> None:
    """Set where the next run of a scope starts (its last_cursor)."""
    try:
        cursor = json.loads(cursor_json)
    except ValueError as exc:
        raise ConfigError(f"--cursor is not valid JSON: {exc}") from None
    topology = topology_of(app)
    _batch_node(topology, node)
    settings = options.settings()
    state, _ = _scope_state(settings, topology, node, scope)
    _refuse_running(state, force, "set")
    now = datetime.now(UTC)
    base = state or CursorState(topology.name, node, scope)
    new = replace(base, run=None, cursor=None, last_cursor=cursor, updated=now)
    _write(settings, [(new.key, CursorCodec().encode(new))])
    abandoned = f" (run {state.run} abandoned)" if state is not None and state.run is not None else ""
    click.echo(f"set {new.key}: the next run starts from {_value(cursor)}{abandoned}")


@cursors.command("reset")
@app_argument
@click.argument("node", metavar="NODE")
@click.option("--scope", default=None, help="The scope to reset (default \"\").")
@click.option("--all-scopes", is_flag=True, help="Reset every scope of the node.")
@click.option("--force", is_flag=True, help="Reset even while a run is in progress (abandons it).")
@pass_options
def reset_cmd(options: Options, *, app: str, node: str, scope: str | None, all_scopes: bool, force: bool) -> None:
    """Forget a scope's cursor: its next run is a full sync."""
    if scope is not None and all_scopes:
        raise click.UsageError("reset: give --scope or --all-scopes, not both")
    topology = topology_of(app)
    _batch_node(topology, node)
    settings = options.settings()
    states = _states(settings, topology, node)
    if all_scopes:
        targets = states
    else:
        wanted = scope or ""
        targets = [s for s in states if s.scope == wanted]
        if not targets:
            raise _unknown_scope(topology, node, wanted, [s.scope for s in states])
    for s in targets:
        _refuse_running(s, force, "reset")
    if not targets:
        click.echo(f"{topology.name}/{node} has no cursors: nothing to reset")
        return
    _write(settings, [(cursor_key(s.topology, s.node, s.scope), None) for s in targets])
    for s in targets:
        click.echo(f"reset {s.key}: the next run is a full sync")
