"""Which offsets may be committed when messages of a partition finish out of order."""

from __future__ import annotations

import heapq


class PartitionOffsets:
    """Tracks started and finished offsets of one partition.

    The committable offset is the lowest unfinished one (or one past the highest finished when
    nothing is unfinished): a crash may repeat finished messages above it, never skip one.
    Not thread-safe: one thread (the dispatcher's loop) calls it.
    """

    __slots__ = ("_finished", "_highest", "_unfinished")

    def __init__(self) -> None:
        self._unfinished: list[int] = []  # heap of started, unfinished offsets
        self._finished: set[int] = set()  # finished offsets still above the lowest unfinished
        self._highest = -1

    def start(self, offset: int) -> None:
        heapq.heappush(self._unfinished, offset)

    def finish(self, offset: int) -> None:
        self._finished.add(offset)
        self._highest = max(self._highest, offset)
        heap = self._unfinished
        while heap and heap[0] in self._finished:
            self._finished.discard(heapq.heappop(heap))

    def committable(self) -> int | None:
        """The next offset to commit, or None when nothing finished yet."""
        if self._highest < 0:
            return None
        return self._unfinished[0] if self._unfinished else self._highest + 1

    @property
    def in_flight(self) -> int:
        return len(self._unfinished) - len(self._finished)
