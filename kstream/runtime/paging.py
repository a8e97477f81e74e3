"""Batch paging: a batch node's handler call is one page of :class:`kstream.batch.BatchRunner`.

The handler of a batch node takes a cursor, not the message's payload: the runner turns the
message into the page to fetch (or None: a run of that scope is in progress) and the page into
its outputs and cursor records.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kstream.batch import BatchRunner
from kstream.context import Context


def paged(runner: BatchRunner, fn: Callable[..., Any], is_async: bool) -> Callable[[Any, Context], Any]:
    """``fn`` (the node's page handler) as a handler of the message that asks for a page."""
    if is_async:
        async def page_async(payload: Any, ctx: Context) -> Any:
            begun = runner.begin(payload, ctx)
            if begun is None:
                return None
            run, cursor, number, params = begun
            return runner.finish(await fn(cursor, ctx), ctx, run=run, cursor=cursor, number=number, params=params)

        return page_async

    def page(payload: Any, ctx: Context) -> Any:
        begun = runner.begin(payload, ctx)
        if begun is None:
            return None
        run, cursor, number, params = begun
        return runner.finish(fn(cursor, ctx), ctx, run=run, cursor=cursor, number=number, params=params)

    return page
