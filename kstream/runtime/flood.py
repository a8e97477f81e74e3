"""The flood limit: a node whose input mostly fails stops instead of draining into the Trash.

A bad deploy (a handler that raises on everything) would otherwise move a whole topic into the
Trash at full speed. Stopping keeps the input where it is: fix, redeploy, and the messages are
processed again from the last commit.
"""

from __future__ import annotations

from kstream.errors import TrashFlood


class FloodGuard:
    """Counts failures over the last ``window`` messages; O(1) per message, no allocation."""

    __slots__ = ("_fails", "_i", "_minimum", "_n", "_node", "_ring", "_share", "_window")

    def __init__(self, node: str, *, share: float, window: int, minimum: int) -> None:
        self._node = node
        self._share = share
        self._window = window
        self._minimum = minimum
        self._ring = bytearray(window)
        self._i = self._n = self._fails = 0

    def record_ok(self, n: int) -> None:
        """Note ``n`` messages that did not fail (cheap while nothing in the window failed)."""
        if self._fails == 0:
            self._i = (self._i + n) % self._window
            self._n = min(self._window, self._n + n)
            return
        for _ in range(n):
            self.record(False)

    def record(self, failed: bool) -> None:
        """Note one finished message; raises :class:`TrashFlood` when failures exceed the share."""
        new = 1 if failed else 0
        self._fails += new - self._ring[self._i]
        self._ring[self._i] = new
        self._i = (self._i + 1) % self._window
        if self._n < self._window:
            self._n += 1
        if failed and self._n >= self._minimum and self._fails > self._share * self._n:
            raise TrashFlood(
                f"node {self._node} stopped: {self._fails} of its last {self._n} messages went to the Trash "
                f"(limit {self._share:.0%}); offsets not committed past the stop. Fix the handler and restart.",
                node=self._node,
            )
