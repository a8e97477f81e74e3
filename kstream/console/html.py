"""Server-rendered HTML without a template engine: every value goes through :func:`esc`."""

from __future__ import annotations

from html import escape
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse

NAV = [("topology", "Topology"), ("trash", "Trash"), ("workflows", "Workflows"), ("cursors", "Cursors")]


def esc(value: Any) -> str:
    return escape("" if value is None else str(value), quote=True)


def url(request: Request, path: str) -> str:
    """``path`` under where the console is mounted (``/`` alone, ``/console`` in ``kstream serve``)."""
    return f"{request.scope.get('root_path', '')}/{path.lstrip('/')}"


def csrf_field(request: Request) -> str:
    return f'<input type="hidden" name="csrf" value="{esc(request.state.csrf)}">'


def form(request: Request, action: str, body: str, *, button: str, cls: str = "") -> str:
    """A POST form carrying the CSRF token."""
    return (f'<form method="post" action="{esc(url(request, action))}" class="{cls}">{csrf_field(request)}{body}'
            f'<button type="submit">{esc(button)}</button></form>')


def page(request: Request, title: str, body: str, *, status: int = 200, active: str = "") -> HTMLResponse:
    links = "".join(f'<a href="{esc(url(request, name))}"{" class=on" if name == active else ""}>{label}</a>'
                    for name, label in NAV)
    signed_in = getattr(request.state, "signed_in_by", None) == "cookie"
    logout = form(request, "logout", "", button="Sign out", cls="logout") if signed_in else ""
    return HTMLResponse(f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{esc(title)} · kstream</title>
<meta name="csrf" content="{esc(request.state.csrf)}">
<link rel="stylesheet" href="{esc(url(request, 'static/console.css'))}">
<script src="{esc(url(request, 'static/console.js'))}" defer></script></head>
<body><header><b>kstream</b> console<nav>{links}</nav>{logout}</header>
<main><h1>{esc(title)}</h1>{body}</main></body></html>""", status_code=status)


def table(head: list[str], rows: list[list[str]], *, cls: str = "") -> str:
    """``rows`` are already HTML (escape the cells)."""
    ths = "".join(f"<th>{esc(h)}</th>" for h in head)
    trs = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{ths}</tr></thead><tbody>{trs}</tbody></table>'
