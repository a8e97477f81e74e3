"""The Trash pages: a filtered, paged list with counts; one entry (payload, headers, error,
attempts, traceback) with its payload editor; replay and discard with a dry-run preview, a
confirmation and a progress page. The store is :class:`kstream.trash_store.TrashStore`, as
for ``kstream trash``; the edit is validated by the node's decoder, as ``kstream trash edit``."""

from __future__ import annotations

from datetime import datetime
from typing import Literal
from urllib.parse import urlencode

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, QueryParams
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from kstream.app import trash_store
from kstream.codecs import pretty_json
from kstream.console.html import esc, form, page, table, url
from kstream.console.state import Console
from kstream.errors import ConfigError, DecodeError, KstreamError
from kstream.trash import TrashEntry
from kstream.trash_store import Selection, TrashFilter, parse_time, summary

PAGE = 50
FIELDS = ("topology", "node", "error", "since", "until")


def _filter(params: QueryParams | FormData) -> TrashFilter:
    """The filter of a query string or form; raises KstreamError on a bad time."""
    value = {k: str(params.get(k) or "").strip() or None for k in FIELDS}
    return TrashFilter(topology=value["topology"], node=value["node"], error=value["error"],
                       since=parse_time(value["since"]) if value["since"] else None,
                       until=parse_time(value["until"]) if value["until"] else None)


def _iso(when: datetime) -> str:
    return when.isoformat(timespec="seconds").replace("+00:00", "Z")


def _pretty(data: bytes | None) -> str:
    return "null" if data is None else pretty_json(data)


def _filter_form(request: Request, given: dict[str, str]) -> str:
    when = ' placeholder="10m, 2h or ISO time"'
    inputs = "".join(f'<label>{k} <input name="{k}" value="{esc(given.get(k, ""))}"{when if k in ("since", "until") else ""}>'
                     '</label>' for k in FIELDS)
    return f'<form method="get" action="{esc(url(request, "trash"))}" class="filters">{inputs}<button>Filter</button></form>'


async def trash_list(console: Console, request: Request) -> Response:
    given = {k: str(request.query_params.get(k) or "") for k in FIELDS}
    try:
        flt = _filter(request.query_params)
    except KstreamError as exc:
        return page(request, "Trash", _filter_form(request, given) + f"<p class=error>{esc(exc)}</p>", status=400,
                    active="trash")
    entries = [e for e in await run_in_threadpool(console.trash) if flt.matches(e)]
    entries.reverse()  # newest failure first
    try:
        number = max(1, int(request.query_params.get("page", "1")))
    except ValueError:
        number = 1
    pages = max(1, -(-len(entries) // PAGE))
    number = min(number, pages)
    shown = entries[(number - 1) * PAGE:number * PAGE]
    counts = table(["topology/node", "error type", "entries"],
                   [[esc(f"{t}/{n}"), esc(err), str(c)] for t, n, err, c in summary(entries)], cls="counts")
    rows = [[f'<input type="checkbox" name="id" value="{esc(e.id)}" form="bulk">',
             f'<a href="{esc(url(request, "trash/" + e.id))}">{esc(e.id)}</a>', esc(_iso(e.last_failure)),
             esc(f"{e.topology}/{e.node}"), esc(e.reason), esc(f"{e.error_type}: {e.error_message}"[:120]),
             str(len(e.attempts)), "edited" if e.edited else ""] for e in shown]
    query = {k: v for k, v in given.items() if v}
    nav = []
    if number > 1:
        nav.append(f'<a href="?{esc(urlencode({**query, "page": number - 1}))}">newer</a>')
    nav.append(f"page {number} of {pages}")
    if number < pages:
        nav.append(f'<a href="?{esc(urlencode({**query, "page": number + 1}))}">older</a>')
    hidden = "".join(f'<input type="hidden" name="{k}" value="{esc(v)}">' for k, v in query.items())
    bulk = (f'<div class="bulk"><form id="bulk" method="post" action="{esc(url(request, "trash/preview"))}">'
            f'<input type="hidden" name="csrf" value="{esc(request.state.csrf)}">{hidden}'
            '<select name="verb"><option value="replay">Replay</option><option value="discard">Discard</option></select>'
            '<select name="scope"><option value="selected">the selected entries</option>'
            f'<option value="filter">all {len(entries)} entries of this filter</option></select>'
            '<button type="submit">Preview…</button></form></div>')
    body = (_filter_form(request, given) + f'<p class="total"><b>{len(entries)}</b> entries</p>' + counts + bulk
            + table(["", "id", "last failure", "node", "reason", "error", "attempts", ""], rows, cls="entries")
            + f'<p class="pager">{" · ".join(nav)}</p>')
    return page(request, "Trash", body, active="trash")


def _entry_body(request: Request, e: TrashEntry, *, draft: str | None = None, error: str = "", note: str = "") -> str:
    facts = table(["", ""], [[k, esc(v)] for k, v in [
        ("node", f"{e.topology}/{e.node}"), ("input", f"{e.topic} [{e.partition}] @ {e.offset}"),
        ("key", e.key.decode("utf-8", errors="backslashreplace") if e.key is not None else None),
        ("workflow", e.workflow), ("reason", e.reason), ("error", f"{e.error_type}: {e.error_message}"),
        ("failures", f"{len(e.attempts)}, first {_iso(e.first_failure)}, last {_iso(e.last_failure)}"),
        ("edited", "yes" if e.edited else "no")]], cls="facts")
    attempts = "".join(f"<li>{esc(_iso(a.time))} {esc(a.error)}</li>" for a in e.attempts)
    headers = table(["header", "value"], [[esc(k), esc(v.decode("utf-8", errors="backslashreplace") if v is not None else None)]
                                          for k, v in e.headers])
    editor = form(request, f"trash/{e.id}/edit",
                  (f'<p class="error" id="edit-error">{esc(error)}</p>' if error else "")
                  + f'<textarea name="payload" rows="14" spellcheck="false">{esc(draft if draft is not None else _pretty(e.value))}'
                    '</textarea>', button="Save payload", cls="editor")
    actions = "".join(form(request, "trash/preview", f'<input type="hidden" name="id" value="{esc(e.id)}">'
                           f'<input type="hidden" name="verb" value="{verb}"><input type="hidden" name="scope" value="selected">',
                           button=f"{verb.capitalize()}…") for verb in ("replay", "discard"))
    return (f'<p class="note">{esc(note)}</p>' if note else "") + facts + f'<div class="actions">{actions}</div>' \
        + f"<h2>Payload</h2>{editor}<h2>Attempts</h2><ol>{attempts}</ol><h2>Headers</h2>{headers}" \
        + f"<h2>Traceback</h2><pre>{esc(e.traceback)}</pre>"


async def _get_entry(console: Console, entry_id: str) -> TrashEntry | None:
    found = [e for e in await run_in_threadpool(console.trash) if e.id == entry_id]
    return found[0] if found else None


async def trash_entry(console: Console, request: Request) -> Response:
    entry = await _get_entry(console, request.path_params["id"])
    if entry is None:
        return page(request, "Not found", f"<p class=error>No trash entry {esc(request.path_params['id'])} "
                    "(resolved already?)</p>", status=404, active="trash")
    note = "Payload saved." if request.query_params.get("saved") else ""
    return page(request, f"Trash entry {entry.id}", _entry_body(request, entry, note=note), active="trash")


async def trash_edit(console: Console, request: Request) -> Response:
    entry = await _get_entry(console, request.path_params["id"])
    if entry is None:
        return page(request, "Not found", "<p class=error>No such trash entry (resolved already?)</p>", status=404)
    draft = str((await request.form()).get("payload") or "")
    refusal = _validate(console, entry, draft.encode())
    if refusal is not None:
        return page(request, f"Trash entry {entry.id}", _entry_body(request, entry, draft=draft, error=refusal),
                    status=422, active="trash")

    def save() -> None:
        store = trash_store(console.settings)
        try:
            store.edit(entry.id, draft.encode())
        finally:
            store.close()
        console.forget_trash()

    await run_in_threadpool(save)
    return RedirectResponse(url(request, f"trash/{entry.id}?saved=1"), status_code=303)


def _validate(console: Console, entry: TrashEntry, value: bytes) -> str | None:
    """Why the node would refuse ``value`` (its decoder and model), or None."""
    topology = console.topology
    if entry.topology != topology.name:
        return f"Edit refused, entry unchanged: it is from topology {entry.topology!r}; this console serves {topology.name!r}."
    try:
        topology.get(entry.node).decode(value)
    except DecodeError as exc:
        return f"Edit refused, entry unchanged: {exc.reason}: {exc}"
    return None


def _selection(data: FormData) -> Selection:
    if data.get("scope") == "filter":
        flt = _filter(data)
        if flt.empty:
            raise ConfigError("a bulk operation by filter needs at least one filter (topology, node, error, since, until)")
        return Selection(filter=flt)
    ids = tuple(str(v) for v in data.getlist("id"))
    if not ids:
        raise ConfigError("no entry selected: tick some entries, or choose all entries of the filter")
    return Selection(ids=ids)


async def trash_preview(console: Console, request: Request) -> Response:
    """The dry run of a replay or discard, and the form that confirms it."""
    data = await request.form()
    verb = _verb(data)
    try:
        selection = _selection(data)

        def dry_run() -> list[TrashEntry]:
            store = trash_store(console.settings)
            return (store.replay if verb == "replay" else store.discard)(selection, dry_run=True)

        entries = await run_in_threadpool(dry_run)
    except KstreamError as exc:
        return page(request, "Nothing to do", f"<p class=error>{esc(exc)}</p>", status=400, active="trash")
    keep = "".join(f'<input type="hidden" name="{esc(k)}" value="{esc(v)}">'
                   for k, v in data.multi_items() if k != "csrf" and isinstance(v, str))
    rows = [[esc(e.id), esc(f"{e.topology}/{e.node}"), esc(e.topic), esc(e.error_type)] for e in entries[:200]]
    more = f"<p>… and {len(entries) - 200} more</p>" if len(entries) > 200 else ""
    confirm = form(request, "trash/run", keep + f'<input type="hidden" name="expected" value="{len(entries)}">',
                   button=f"Confirm: {verb} {len(entries)} entries", cls="confirm")
    body = (f'<p class="preview">Dry run: <b>{verb}</b> would touch <b>{len(entries)}</b> entries'
            f'{" (including messages parked behind them)" if verb == "replay" else ""}. Nothing is changed yet.</p>'
            + table(["id", "node", "goes to" if verb == "replay" else "input", "error type"], rows) + more + confirm
            + f'<p><a href="{esc(url(request, "trash"))}">Cancel</a></p>')
    return page(request, f"Preview: {verb}", body, active="trash")


def _verb(data: FormData) -> Literal["replay", "discard"]:
    return "discard" if data.get("verb") == "discard" else "replay"


async def trash_run(console: Console, request: Request) -> Response:
    data = await request.form()
    try:
        selection = _selection(data)
    except KstreamError as exc:
        return page(request, "Nothing to do", f"<p class=error>{esc(exc)}</p>", status=400, active="trash")
    expected = str(data.get("expected") or "")
    job = console.start_job(_verb(data), selection, int(expected) if expected.isdigit() else 0)
    return RedirectResponse(url(request, f"jobs/{job.id}"), status_code=303)


async def job_page(console: Console, request: Request) -> Response:
    job = console.jobs.get(request.path_params["id"])
    if job is None:
        return page(request, "Not found", "<p class=error>No such job (the console restarted?)</p>", status=404)
    body = (f'<div data-live="{esc(url(request, f"api/jobs/{job.id}"))}" data-every="500" data-render="job">'
            f'<progress max="{max(job.total, 1)}" value="{job.done}"></progress> '
            f'<span class="progress">{job.verb}: {job.done}/{job.total} {job.state}</span></div>'
            f'<p><a href="{esc(url(request, "trash"))}">Back to the Trash</a></p>')
    return page(request, f"{job.verb.capitalize()} in progress", body, active="trash")


async def job_json(console: Console, request: Request) -> Response:
    job = console.jobs.get(request.path_params["id"])
    if job is None:
        return JSONResponse({"error": "no such job"}, status_code=404)
    return JSONResponse({"id": job.id, "verb": job.verb, "done": job.done, "total": job.total, "state": job.state,
                         "error": job.error})
