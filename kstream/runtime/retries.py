"""The retry runner: what happens after an attempt failed.

* The service said it is full (:class:`RateLimited`): slow the service's limiter down and try
  again after the wait it asked for; this is not an attempt.
* A retryable error with attempts left: wait in place (ordered nodes: the partition waits, order
  holds), or hand the message to the node's retry topic with a due time (unordered nodes).
* Anything else (``Permanent``, validation errors, attempts exhausted): a Trash entry.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime

from kstream import headers as hdr
from kstream.errors import Permanent, RateLimited
from kstream.limits import Limiter
from kstream.metrics import NodeStats
from kstream.retry import Retry
from kstream.runtime.trash_writer import Produce, TrashWriter
from kstream.trash import TrashEntry, failure_entry
from kstream.types import Attempt, Record

OnTrashed = Callable[[Record, TrashEntry], None]


class RetryRunner:
    """Decides, after each failed attempt of a message, between waiting, the retry topic and the Trash."""

    def __init__(self, retry: Retry, *, topology: str, node: str, trash: TrashWriter, produce: Produce,
                 retry_topic: str | None, limiter: Limiter | None, stats: NodeStats | None, log: logging.Logger,
                 log_node: dict[str, str], on_trashed: OnTrashed | None = None) -> None:
        self.retry = retry
        self._topology = topology
        self._node = node
        self._trash = trash
        self._produce = produce
        self._retry_topic = retry_topic
        self._limiter = limiter
        self._stats = stats
        self._log = log
        self._log_node = log_node
        self._on_trashed = on_trashed

    def failed(self, msg: Record, env: hdr.Envelope, exc: Exception, history: list[Attempt]) -> float | bool:
        """Record a failed attempt. Returns seconds to wait before retrying in place, True when
        the message went to the Trash, False when it went to the retry topic."""
        if isinstance(exc, RateLimited):
            # The service is not failing, it is full: slow the whole service down and try
            # again; this does not count as an attempt.
            if self._limiter is not None:
                self._limiter.slow_down(exc.retry_after)
            if self._stats is not None:
                self._stats.rate_limited += 1
            self._log.info("%s rate limited by the service; retrying in %.2fs", env.message_id, exc.retry_after or 1.0,
                           extra=self._log_message(msg, env))
            return exc.retry_after or 1.0
        history.append(Attempt(datetime.now(UTC), f"{type(exc).__name__}: {exc}"))
        attempt = env.attempt + len(history) - 1
        retryable = not isinstance(exc, Permanent) and isinstance(exc, self.retry.on)
        if retryable and attempt < self.retry.attempts:
            delay = self.retry.delay(attempt)
            if self._stats is not None:
                self._stats.retried += 1
            self._log.warning("attempt %d of %s failed (%s: %s); retrying in %.2fs%s", attempt, env.message_id,
                              type(exc).__name__, exc, delay, " via the retry topic" if self._retry_topic else "",
                              extra=self._log_message(msg, env))
            if self._retry_topic is None:
                return delay
            self._defer(msg, env, attempt, delay, history)
            return False
        entry = failure_entry(msg, topology=self._topology, node=self._node, exc=exc, workflow=env.workflow,
                              attempts=(*env.history(), *history))
        self._trash.write(entry)
        if self._on_trashed is not None:
            self._on_trashed(msg, entry)
        return True

    def _defer(self, msg: Record, env: hdr.Envelope, attempt: int, delay: float, history: list[Attempt]) -> None:
        """Hand the message to the node's retry topic, due ``delay`` seconds from now."""
        assert self._retry_topic is not None
        due = int((time.time() + delay) * 1000)
        self._produce(self._retry_topic, msg.value(), msg.key(),
                      hdr.for_retry(msg, attempt=attempt + 1, due_ms=due, history=[*env.history(), *history]))

    def _log_message(self, msg: Record, env: hdr.Envelope | None) -> dict[str, object]:
        """``extra`` of a message-level log line: where the record is and its id, never its payload."""
        return {**self._log_node, "topic": msg.topic(), "partition": msg.partition(), "offset": msg.offset(),
                "kstream_id": env.message_id if env is not None else None}
