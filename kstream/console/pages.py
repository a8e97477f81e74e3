"""The topology, workflows and cursors pages. Live parts are fragments or JSON that
``static/console.js`` fetches again every few seconds (``data-live``)."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from kstream.app import cursor_reader, producer
from kstream.batch import CursorState, read_cursors
from kstream.console.html import esc, form, page, table, url
from kstream.console.state import Console
from kstream.errors import BrokerError
from kstream.workflows.client import command_event
from kstream.workflows.state import ACTIVE, status_document

# -- topology ------------------------------------------------------------------------------


async def topology_page(console: Console, request: Request) -> Response:
    body = (f'<p>Topology <b>{esc(console.topology.name)}</b>: boxes are nodes, cylinders topics. Per node: '
            'lag · rate in/out · in flight · Trash; the bottleneck is outlined in red. Refreshed every 2 s.</p>'
            f'<div id="graph" data-src="{esc(url(request, "api/topology"))}" data-every="2000"></div>'
            '<p class="updated" id="graph-updated"></p>')
    return page(request, "Topology", body, active="topology")


async def topology_json(console: Console, request: Request) -> Response:
    return JSONResponse(await run_in_threadpool(console.topology_data))


# -- workflows -----------------------------------------------------------------------------


def _no_workflows(request: Request) -> Response:
    return page(request, "Workflows", "<p>This console serves no workflows (start it with an APP that holds "
                "Workflow objects).</p>", active="workflows")


async def workflows_page(console: Console, request: Request) -> Response:
    api = console.workflows
    if api is None:
        return _no_workflows(request)
    wf_type = request.query_params.get("type") or None
    status = request.query_params.get("status") or None
    found = api.view.select(workflow_type=wf_type, status=status, limit=200)
    types = "".join(f'<option{" selected" if t == wf_type else ""}>{esc(t)}</option>' for t in sorted(api.workflows))
    statuses = sorted(ACTIVE | {"completed", "failed", "compensated", "cancelled", "timed_out"})
    status_opts = "".join(f'<option{" selected" if s == status else ""}>{esc(s)}</option>' for s in statuses)
    filters = (f'<form method="get" class="filters"><label>type <select name="type"><option value="">all</option>{types}'
               f'</select></label><label>status <select name="status"><option value="">all</option>{status_opts}</select>'
               '</label><button>Filter</button></form>')
    counts: dict[tuple[str, str], int] = {}
    for s in api.view.select(workflow_type=None, status=None, limit=100_000):
        counts[(s["type"], s["status"])] = counts.get((s["type"], s["status"]), 0) + 1
    summary = table(["type", "status", "workflows"], [[esc(t), esc(st), str(c)] for (t, st), c in sorted(counts.items())])
    rows = [[f'<a href="{esc(url(request, "workflows/" + s["id"]))}">{esc(s["id"])}</a>', esc(s["type"]),
             f'<span class="st {esc(s["status"])}">{esc(s["status"])}</span>', esc(_iso(s.get("started"))),
             esc(_iso(s.get("finished")))] for s in found]
    body = filters + summary + table(["id", "type", "status", "started", "finished"], rows, cls="workflows")
    return page(request, "Workflows", body, active="workflows")


def _iso(ms: int | None) -> str:
    return "" if ms is None else datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def timeline(state: dict[str, Any], order: list[str]) -> str:
    """Steps as bars on the workflow's time axis, with status, attempts, errors and durations."""
    doc = status_document(state)
    start = int(state["started"])
    ends = [s.get("finished") or s.get("started") or start for s in state["steps"].values()]
    end = max([state.get("finished") or 0, int(time.time() * 1000) if state["status"] in ACTIVE else 0, *ends, start + 1])
    span = end - start
    rows = []
    for name in order:
        raw = state["steps"].get(name, {})
        shown = doc["steps"].get(name, {"status": "pending"})
        bar = ""
        if raw.get("started") is not None:
            left = 100 * (raw["started"] - start) / span
            width = max(0.5, 100 * ((raw.get("finished") or end) - raw["started"]) / span)
            bar = f'<div class="bar {esc(shown["status"])}" style="margin-left:{left:.1f}%;width:{width:.1f}%"></div>'
        rows.append([esc(name), f'<span class="st {esc(shown["status"])}">{esc(shown["status"])}</span>',
                     str(shown.get("attempts", "")), esc(shown.get("duration", "")), esc(shown.get("error", "")),
                     f'<div class="track">{bar}</div>'])
    comps = [[esc(c["name"]), esc(c["step"]), f'<span class="st {esc(c["status"])}">{esc(c["status"])}</span>',
              str(c["attempts"]), esc(c.get("error", ""))] for c in doc["compensations"]]
    head = (f'<p class="wfstatus">Status: <span class="st {esc(doc["status"])}" id="wf-status">{esc(doc["status"])}</span>'
            f' · started {esc(doc["startedAt"])}' + (f' · finished {esc(doc["finishedAt"])}' if "finishedAt" in doc else "")
            + (f' · <span class="error">{esc(doc["error"])}</span>' if "error" in doc else "") + "</p>")
    out = head + table(["step", "status", "attempts", "duration", "error", "timeline"], rows, cls="timeline")
    if comps:
        out += "<h2>Compensations</h2>" + table(["compensation", "undoes", "status", "attempts", "error"], comps,
                                                cls="compensations")
    return out


async def workflow_page(console: Console, request: Request) -> Response:
    api = console.workflows
    if api is None:
        return _no_workflows(request)
    wid = request.path_params["id"]
    state = api.state(wid)
    if state is None:
        return page(request, "Not found", f"<p class=error>No workflow {esc(wid)}</p>", status=404, active="workflows")
    buttons = "".join(form(request, f"workflows/{wid}/{c}", "", button=c.capitalize(), cls="inline")
                      for c in ("cancel", "retry"))
    note = f'<p class="note">{esc(request.query_params["sent"])} sent.</p>' if request.query_params.get("sent") else ""
    body = (note + f'<div class="actions">{buttons}</div>'
            f'<div id="timeline" data-live="{esc(url(request, f"workflows/{wid}/timeline"))}" data-every="1000">'
            f'{timeline(state, api.workflows[state["type"]].order())}</div>')
    return page(request, f"Workflow {wid}", body, active="workflows")


async def workflow_fragment(console: Console, request: Request) -> Response:
    api = console.workflows
    state = api.state(request.path_params["id"]) if api is not None else None
    if api is None or state is None:
        return HTMLResponse("<p class=error>No such workflow</p>", status_code=404)
    return HTMLResponse(timeline(state, api.workflows[state["type"]].order()))


async def workflow_command(console: Console, request: Request) -> Response:
    api = console.workflows
    wid, command = request.path_params["id"], request.path_params["command"]
    state = api.state(wid) if api is not None else None
    if api is None or state is None or command not in ("cancel", "retry"):
        return page(request, "Not found", "<p class=error>No such workflow or command</p>", status=404)
    error = await api.write(str(state["type"]), wid, command_event(command))
    if error is not None:
        return page(request, "Not sent", f"<p class=error>{esc(command)} could not be stored: {esc(error)}</p>", status=503)
    return RedirectResponse(url(request, f"workflows/{wid}?sent={command}"), status_code=303)


# -- cursors -------------------------------------------------------------------------------


def _cursors(console: Console) -> list[CursorState]:
    batch = [n for n in console.topology.order() if console.topology.nodes[n].batch is not None]
    states = read_cursors(cursor_reader(console.settings), console.settings.cursors_topic, topology=console.topology.name,
                          timeout=30.0)
    return sorted((s for s in states if s.node in batch), key=lambda s: (batch.index(s.node), s.scope))


def _value(value: Any) -> str:
    return "-" if value is None else json.dumps(value)


async def cursors_page(console: Console, request: Request) -> Response:
    states = await run_in_threadpool(_cursors, console)
    batch = [n for n in console.topology.order() if console.topology.nodes[n].batch is not None]
    note = f'<p class="note">{esc(request.query_params["reset"])} reset: its next run is a full sync.</p>' \
        if request.query_params.get("reset") else ""
    rows = [[esc(s.node), esc(json.dumps(s.scope)), "running " + esc(s.run) if s.run else "idle", esc(_value(s.cursor)),
             esc(_value(s.last_cursor)), str(s.pages), str(s.items), esc(s.updated.isoformat(timespec="seconds")),
             form(request, "cursors/reset", f'<input type="hidden" name="node" value="{esc(s.node)}">'
                  f'<input type="hidden" name="scope" value="{esc(s.scope)}">', button="Reset…", cls="inline")]
            for s in states]
    body = note + (f"<p>Batch nodes: {esc(', '.join(batch))}</p>" if batch else "<p>This topology has no batch nodes.</p>")
    body += table(["node", "scope", "run", "cursor", "last cursor", "pages", "items", "updated", ""], rows, cls="cursors")
    return page(request, "Cursors", body, active="cursors")


async def cursor_reset(console: Console, request: Request) -> Response:
    """First POST: the confirmation; with ``confirm``: the tombstone (refused while a run is in
    progress unless ``force``, like ``kstream cursors reset``)."""
    data = await request.form()
    node, scope = str(data.get("node") or ""), str(data.get("scope") or "")
    states = await run_in_threadpool(_cursors, console)
    state = next((s for s in states if s.node == node and s.scope == scope), None)
    if state is None:
        return page(request, "Not found", f"<p class=error>{esc(node)} has no cursor for scope {esc(json.dumps(scope))}</p>",
                    status=404, active="cursors")
    keep = f'<input type="hidden" name="node" value="{esc(node)}"><input type="hidden" name="scope" value="{esc(scope)}">'
    if not data.get("confirm"):
        running = (f'<p class="error">Run {esc(state.run)} is in progress (page {state.pages}): resetting abandons it.</p>'
                   '<label><input type="checkbox" name="force" value="1"> abandon the run</label>') if state.run else ""
        body = (f"<p>Forget the cursor of <b>{esc(node)}</b> scope <b>{esc(json.dumps(scope))}</b> "
                f"(last cursor {esc(_value(state.last_cursor))})? Its next run is a full sync.</p>"
                + form(request, "cursors/reset", keep + running + '<input type="hidden" name="confirm" value="1">',
                       button="Confirm reset", cls="confirm") + f'<p><a href="{esc(url(request, "cursors"))}">Cancel</a></p>')
        return page(request, "Reset cursor", body, active="cursors")
    if state.run is not None and not data.get("force"):
        return page(request, "Refused", f"<p class=error>Run {esc(state.run)} is in progress: reset refused "
                    "(tick “abandon the run”).</p>", status=409, active="cursors")

    def write() -> None:
        prod = producer(console.settings)
        prod.produce(console.settings.cursors_topic, None, state.key.encode(), None)
        left, errors = prod.flush(30.0), prod.take_errors()
        if errors or left:
            raise BrokerError(errors[0] if errors else "the reset was not acknowledged within 30 s")

    await run_in_threadpool(write)
    return RedirectResponse(url(request, f"cursors?reset={state.key}"), status_code=303)
