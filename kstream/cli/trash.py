"""``kstream trash list|show|edit|replay|discard`` (design.md s.5)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from kstream.app import trash_store
from kstream.avro_topics import avro_as_json, json_to_avro
from kstream.cli.common import Options, pass_options, topology_of
from kstream.cli.progress import ProgressLine
from kstream.config import Settings
from kstream.errors import ConfigError, DecodeError
from kstream.kafka.port import ReadProgress
from kstream.trash import TrashEntry
from kstream.trash_store import Progress, Selection, TrashFilter, TrashStore, parse_time, summary


@click.group()
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=60.0, show_default=True, metavar="SECONDS",
              help="Deadline to read the Trash topic to its end (and for each transaction).")
@click.pass_context
def trash(ctx: click.Context, timeout: float) -> None:
    """Inspect, fix, replay and discard messages that failed (the Trash).

    Every command reads the whole Trash topic once; on a large Trash, progress shows on stderr
    (at once on a terminal, otherwise after 2 s).
    """
    ctx.meta[_TIMEOUT] = timeout


_TIMEOUT = "kstream.trash.timeout"


@contextmanager
def _store(options: Options, *, batch_size: int = 500) -> Iterator[tuple[TrashStore, ProgressLine]]:
    """The store with the group's deadline, and the progress line of its reads (closed after)."""
    timeout = click.get_current_context().meta.get(_TIMEOUT, 60.0)
    store = trash_store(options.settings(), batch_size=batch_size, timeout=timeout)
    line = ProgressLine(f"reading {store.topic}")
    try:
        yield store, line
    finally:
        line.close()
        store.close()


def _filter_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = click.option("--until", help="Failed at or before: ISO time or ago (10m, 2h, 1d).")(fn)
    fn = click.option("--since", help="Failed at or after: ISO time or ago (10m, 2h, 1d).")(fn)
    fn = click.option("--error", "error", metavar="TEXT", help="Text in the error type, message or reason.")(fn)
    fn = click.option("--node", help="Only entries of this node.")(fn)
    return click.option("--topology", help="Only entries of this topology.")(fn)


def _filter(topology: str | None, node: str | None, error: str | None, since: str | None, until: str | None) -> TrashFilter:
    return TrashFilter(
        topology=topology, node=node, error=error,
        since=parse_time(since) if since else None, until=parse_time(until) if until else None,
    )


def _text(data: bytes | None) -> str | None:
    return None if data is None else data.decode("utf-8", errors="backslashreplace")


def _pretty(data: bytes | None) -> str:
    if data is None:
        return "(null)"
    try:
        return json.dumps(json.loads(data), indent=2, ensure_ascii=False)
    except ValueError:
        return _text(data) or ""


def _iso(when: datetime) -> str:
    return when.isoformat(timespec="milliseconds")


def _as_json(e: TrashEntry) -> dict[str, Any]:
    return {
        "id": e.id, "topology": e.topology, "node": e.node, "reason": e.reason, "error_type": e.error_type,
        "error_message": e.error_message, "key": _text(e.key), "topic": e.topic, "partition": e.partition,
        "offset": e.offset, "workflow": e.workflow, "attempts": len(e.attempts),
        "first_failure": _iso(e.first_failure), "last_failure": _iso(e.last_failure), "edited": e.edited,
    }


def _one_line(text: str, width: int = 60) -> str:
    line = " ".join(text.split())
    return line if len(line) <= width else line[: width - 1] + "…"


@trash.command("list")
@_filter_options
@click.option("--json", "as_json", is_flag=True, help="Print entries and summary as JSON.")
@pass_options
def list_cmd(options: Options, *, topology: str | None, node: str | None, error: str | None, since: str | None,
             until: str | None, as_json: bool) -> None:
    """List unresolved entries, then a count per node and error type."""
    flt = _filter(topology, node, error, since, until)
    with _store(options) as (store, reading):
        entries = store.entries(flt, reading)
    groups = summary(entries)
    if as_json:
        click.echo(json.dumps({
            "entries": [_as_json(e) for e in entries],
            "summary": [{"topology": t, "node": n, "error_type": err, "count": c} for t, n, err, c in groups],
            "total": len(entries),
        }, indent=2))
        return
    for e in entries:
        edited = " (edited)" if e.edited else ""
        click.echo(f"{e.id}  {_iso(e.last_failure)}  {e.topology}/{e.node}  {e.reason}  "
                   f"{e.error_type}: {_one_line(e.error_message)}{edited}")
    if entries:
        click.echo("")
    for t, n, err, c in groups:
        click.echo(f"{c:>8}  {t}/{n}  {err}")
    click.echo(f"{len(entries)} entr{'y' if len(entries) == 1 else 'ies'}")


@trash.command("show")
@click.argument("entry_id", metavar="ID")
@pass_options
def show_cmd(options: Options, entry_id: str) -> None:
    """Show one entry: where and why it failed, its headers, payload and traceback."""
    with _store(options) as (store, reading):
        e = store.get(entry_id, reading)
    click.echo(f"id:            {e.id}{'  (edited)' if e.edited else ''}")
    click.echo(f"node:          {e.topology}/{e.node}")
    click.echo(f"input:         {e.topic} [{e.partition}] @ {e.offset}")
    click.echo(f"key:           {_text(e.key)}")
    click.echo(f"workflow:      {e.workflow}")
    click.echo(f"reason:        {e.reason}")
    click.echo(f"error:         {e.error_type}: {e.error_message}")
    click.echo(f"failures:      {len(e.attempts)}, first {_iso(e.first_failure)}, last {_iso(e.last_failure)}")
    for a in e.attempts:
        click.echo(f"  {_iso(a.time)}  {a.error}")
    click.echo("headers:")
    for k, v in e.headers:
        click.echo(f"  {k}: {_text(v)}")
    as_json = avro_as_json(options.settings(), e.value)
    click.echo("payload:" if as_json is None else "payload (Avro, shown as JSON):")
    click.echo(_pretty(e.value) if as_json is None else as_json)
    if e.traceback:
        click.echo("traceback:")
        click.echo(e.traceback.rstrip("\n"))


@trash.command("edit")
@click.argument("entry_id", metavar="ID")
@click.option("--app", "app", required=True, metavar="APP", help="The topology (module:attr) whose node validates the payload.")
@click.option("--file", "file", type=click.Path(path_type=Path), help="Read the new payload from this file (default: $EDITOR).")
@pass_options
def edit_cmd(options: Options, *, entry_id: str, app: str, file: Path | None) -> None:
    """Replace an entry's payload; it is validated by the node's decoder before it is kept.

    Avro payloads are edited as JSON and re-encoded with the node's schema.
    """
    settings = options.settings()
    with _store(options) as (store, reading):
        _edit(store, store.get(entry_id, reading), app, file, settings)


def _edit(store: TrashStore, entry: TrashEntry, app: str, file: Path | None, settings: Settings) -> None:
    shown = avro_as_json(settings, entry.value)
    if file is not None:
        try:
            value = file.read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read {file}: {exc.strerror or exc}") from None
    else:
        text = click.edit((shown or _pretty(entry.value)) + "\n", extension=".json")
        if text is None:
            click.echo("no change saved: the entry is unchanged", err=True)
            return
        value = text.encode()
    topology = topology_of(app)
    if topology.name != entry.topology:
        raise ConfigError(f"entry {entry.id} is from topology {entry.topology!r}, APP {app} is {topology.name!r}")
    node = topology.get(entry.node)
    try:
        node.decode(value)
        if node.avro is not None:  # edited as JSON, kept as the node's Avro
            value = json_to_avro(topology, node, settings, value)
    except DecodeError as exc:
        raise ConfigError(f"edit refused, entry unchanged: {exc.reason}: {exc}") from None
    store.edit(entry.id, value)
    click.echo(f"edited {entry.id}: replay it with `kstream trash replay {entry.id}`")


_PAST = {"replay": "replayed", "discard": "discarded"}


def _bulk_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = click.option("--batch-size", default=500, show_default=True, hidden=True,
                      type=click.IntRange(min=1), help="Entries per transaction.")(fn)
    fn = click.option("--dry-run", is_flag=True, help="Only list what would be done.")(fn)
    fn = _filter_options(fn)
    fn = click.option("--filter", "use_filter", is_flag=True, help="Select by the filter options instead of ids.")(fn)
    return click.argument("ids", nargs=-1, metavar="[ID]...")(fn)


def _bulk(options: Options, verb: str, *, ids: tuple[str, ...], flt: TrashFilter, use_filter: bool, dry_run: bool,
          batch_size: int, run: Callable[[TrashStore, Selection, bool, Progress, ReadProgress], list[TrashEntry]]) -> None:
    if ids and (use_filter or not flt.empty):
        raise click.UsageError(f"{verb}: give entry ids or filter options, not both")
    if not ids and flt.empty:
        raise click.UsageError(f"{verb}: give entry ids, or --filter with --topology/--node/--error/--since/--until")

    def progress(done: int, total: int) -> None:
        click.echo(f"{verb}: {done}/{total}", err=True)

    with _store(options, batch_size=batch_size) as (store, reading):
        entries = run(store, Selection(ids=ids, filter=None if ids else flt), dry_run, progress, reading)
    if dry_run:
        for e in entries:
            click.echo(f"{e.id}  {e.topology}/{e.node} -> {store.target(e)}  {e.error_type}")
        click.echo(f"would {verb} {len(entries)} entr{'y' if len(entries) == 1 else 'ies'} (dry run)")
    else:
        click.echo(f"{_PAST[verb]} {len(entries)} entr{'y' if len(entries) == 1 else 'ies'}")


def _replay(store: TrashStore, sel: Selection, dry: bool, progress: Progress, reading: ReadProgress) -> list[TrashEntry]:
    return store.replay(sel, dry_run=dry, progress=progress, reading=reading)


def _discard(store: TrashStore, sel: Selection, dry: bool, progress: Progress, reading: ReadProgress) -> list[TrashEntry]:
    return store.discard(sel, dry_run=dry, progress=progress, reading=reading)


@trash.command("replay")
@_bulk_options
@pass_options
def replay_cmd(options: Options, *, ids: tuple[str, ...], use_filter: bool, topology: str | None, node: str | None,
               error: str | None, since: str | None, until: str | None, dry_run: bool, batch_size: int) -> None:
    """Send entries back to the node that failed, exactly once (with kstream-replay-of).

    A replay goes to the node's input topic; for a source= node (whose input other services
    read too) to its own replay topic {ns}.{topology}.{node}.replay instead.
    """
    _bulk(options, "replay", ids=ids, flt=_filter(topology, node, error, since, until), use_filter=use_filter,
          dry_run=dry_run, batch_size=batch_size, run=_replay)


@trash.command("discard")
@_bulk_options
@pass_options
def discard_cmd(options: Options, *, ids: tuple[str, ...], use_filter: bool, topology: str | None, node: str | None,
                error: str | None, since: str | None, until: str | None, dry_run: bool, batch_size: int) -> None:
    """Resolve entries without replaying them."""
    _bulk(options, "discard", ids=ids, flt=_filter(topology, node, error, since, until), use_filter=use_filter,
          dry_run=dry_run, batch_size=batch_size, run=_discard)
