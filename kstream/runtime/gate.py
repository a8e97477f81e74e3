"""A commit gate: lets an exactly-once worker commit while its handler only waits.

An exactly-once commit needs the lane idle: no handler may be producing while the
transaction's offsets are taken and the transaction ends. A handler that waits (an in-place
retry's backoff, a rate limit) produces nothing meanwhile, so the poll thread may commit what
finished before it; without that a long wait keeps the transaction open until the broker times
it out (and aborts all of it). The lane marks such waits with :meth:`CommitGate.waiting`; the
poll thread commits only inside :meth:`CommitGate.try_begin_commit` / :meth:`end_commit`, and a
wait that ends during a commit blocks until the commit is done.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class CommitGate:
    """Shared by one lane (the waiting side) and one poll thread (the committing side)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._waiting = False
        self._committing = False

    @contextmanager
    def waiting(self) -> Iterator[None]:
        """The lane waits without producing anything inside this block."""
        with self._cond:
            self._waiting = True
        try:
            yield
        finally:
            with self._cond:
                while self._committing:
                    self._cond.wait()
                self._waiting = False

    def try_begin_commit(self) -> bool:
        """True if the lane waits now; it then stays held until :meth:`end_commit`."""
        with self._cond:
            if not self._waiting or self._committing:
                return False
            self._committing = True
            return True

    def end_commit(self) -> None:
        with self._cond:
            self._committing = False
            self._cond.notify_all()
