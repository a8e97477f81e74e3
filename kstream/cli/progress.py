"""A progress line on stderr while a tool reads a large topic (``kstream trash``, ``kstream cursors``)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO


class ProgressLine:
    """A :data:`kstream.kafka.port.ReadProgress` that prints ``what: done/total records (n%)``.

    On a terminal it shows at once and is redrawn in place; elsewhere (logs, pipes, CI) only once
    a read has taken ``after`` seconds, a line every ``every`` seconds, so small topics stay quiet.
    stdout is left alone: it carries the command's output. Call :meth:`close` when done.
    """

    def __init__(self, what: str, *, after: float = 2.0, every: float = 2.0, stream: TextIO | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._what = what
        self._stream: TextIO = stream if stream is not None else sys.stderr
        self._tty = self._stream.isatty()
        self._after = 0.0 if self._tty else after
        self._every = 0.2 if self._tty else every
        self._clock = clock
        self._started = clock()
        self._shown: float | None = None
        self._open = False

    def __call__(self, done: int, total: int) -> None:
        now = self._clock()
        if total <= 0 or now - self._started < self._after:
            return
        if self._shown is not None and done < total and now - self._shown < self._every:
            return
        self._shown = now
        text = f"{self._what}: {done:,}/{total:,} records ({done * 100 // total}%)"
        if self._tty:
            self._stream.write(f"\r{text}\x1b[K")
            self._open = True
        else:
            self._stream.write(text + "\n")
        self._stream.flush()

    def close(self) -> None:
        if self._open:
            self._stream.write("\n")
            self._stream.flush()
            self._open = False
