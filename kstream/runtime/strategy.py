"""How a worker runs handlers on what it polled: the contract between the poll loop and the
two strategies, :class:`kstream.runtime.serial.Serial` (prefetch 1, strictly in order) and
:class:`kstream.runtime.concurrent.Concurrent` (prefetch N, per-key order or none)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from kstream.types import Record

Partition = tuple[str, int]
KeepAlive = Callable[[], None]
"""Called while a strategy's ``submit`` blocks the poll thread past ~0.5 s, over and over, from
another thread (the serial strategy's watchdog): polls the consumer (partitions paused) so the
group membership never expires, and commits what is due. Never at the same time as the poll
thread uses the consumer."""


class Strategy(Protocol):
    """Every method is called from the worker's poll thread, or from the thread that runs
    ``keepalive`` while ``submit`` blocks (rebalance callbacks, a stop, commits).

    ``submit`` takes a batch in offset order per partition. It may block (the serial strategy
    runs the batch inline, its watchdog calling ``keepalive`` meanwhile) or only queue it (the
    concurrent one). It
    returns the tail it did not take (interrupted by a revocation or a stop), which the caller
    submits again, first, if it still owns those partitions. A message it took is either
    finished (its offset becomes committable) or abandoned uncommitted on ``revoke``/``drain``.
    """

    processed: int
    """Messages finished so far (outputs produced or sent to the Trash)."""

    @property
    def in_flight(self) -> int:
        """Messages taken by ``submit`` and neither finished nor dropped yet (running or
        queued). A snapshot for status reports: may lag the handler threads by a message."""
        ...

    def submit(self, batch: list[Record], keepalive: KeepAlive) -> list[Record]: ...

    def full(self) -> bool:
        """True while the in-flight buffer is full: the poll thread pauses its partitions (and
        resumes them when this turns False; a strategy may keep it True until it drained some)."""
        ...

    def committable(self) -> dict[Partition, int]:
        """Per partition, the next offset to commit: everything below it is finished."""
        ...

    def revoke(self, partitions: set[Partition], timeout: float) -> None:
        """Drop queued messages of ``partitions`` and wait up to ``timeout`` for their in-flight
        ones; what is still running after that is abandoned uncommitted."""
        ...

    def forget(self, partitions: set[Partition]) -> None:
        """The partitions are gone (after their last commit): drop their offsets."""
        ...

    def drain(self, timeout: float) -> None:
        """Stopping: finish what runs (up to ``timeout``), start nothing new."""
        ...

    def quiesce(self, timeout: float) -> None:
        """Start nothing new and wait (up to ``timeout``) until nothing runs: then every
        finished message is below the committable offsets (exactly-once commits need that)."""
        ...

    def unquiesce(self) -> None: ...

    def check(self) -> None:
        """Raise the fatal error a handler thread hit (e.g. the flood limit), if any."""
        ...

    def interrupt(self) -> None:
        """Called from ``keepalive`` when a commit is due: a blocking ``submit`` returns at the
        next message boundary (with the rest of its batch), so the caller can commit; a
        non-blocking strategy has nothing to do."""
        ...

    def close(self) -> None: ...
