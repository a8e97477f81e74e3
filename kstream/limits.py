"""Global rate limits: every worker that calls the same external service shares one rate.

Coordination goes through Kafka itself, no extra server (see :class:`GlobalRateLimiter`).
"""

from __future__ import annotations

from typing import Protocol


class Limiter(Protocol):
    """Admits calls to one service at the worker's current share of the global rate.

    ``acquire`` blocks the calling thread until a call may be made (thread-safe: a prefetch-N
    sync node calls it from its pool threads); ``acquire_async`` is the same for async
    handlers and never blocks the event loop. ``slow_down`` is called when the service said
    "too many requests": the worker's rate drops (to ``retry_after`` pacing if given) and
    recovers gradually. ``close`` leaves the coordination group; the others take over the
    share within a rebalance.
    """

    def acquire(self) -> None: ...

    async def acquire_async(self) -> None: ...

    def slow_down(self, retry_after: float | None) -> None: ...

    def close(self) -> None: ...
