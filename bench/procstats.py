"""Process statistics from Linux ``/proc``, and a contender that is its own process.

The CPU time and peak memory of a process are read while it runs, so a benchmark measures the
contender's own cost, not its own.
"""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Sequence
from pathlib import Path

from bench.paths import LOGS_DIR, REPO

_CLK_TCK = os.sysconf("SC_CLK_TCK")


def process_cpu(pid: int | None) -> float | None:
    """User+system CPU seconds of another process (Linux ``/proc``), or None if unknown."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    # After the ")" of the command name: state is field 0, utime 11, stime 12 (man 5 proc).
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def proc_status_kb(pid: int | None, field: str) -> int | None:
    """A ``kB`` field of ``/proc/<pid>/status`` (``VmRSS``, ``VmHWM``...), or None if gone."""
    if pid is None:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def rss_bytes(pid: int | None) -> int | None:
    kb = proc_status_kb(pid, "VmRSS")
    return None if kb is None else kb * 1024


class ProcessContender:
    """A contender that is its own process: started on ``__call__``, stopped by a signal.

    Its CPU time (:meth:`cpu`) and peak RSS (:meth:`peak_rss`, ``VmHWM``) are read from
    ``/proc`` while it runs; the last value read is kept once it has exited. Its output goes to
    ``bench/results/logs/<name>.log``. Dying before it is stopped fails the run; a non-zero exit
    status after the stop signal is only recorded (:attr:`exit_code`). ``topics`` lists topics
    its factory created for it (a chain's middle topics), for the harness to clean up.
    """

    def __init__(self, name: str, argv: Sequence[str], *, env: dict[str, str] | None = None,
                 stop_signal: int = 15, stop_timeout: float = 60.0, topics: Sequence[str] = ()) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = {**os.environ, **(env or {})}
        self.stop_signal = stop_signal
        self.stop_timeout = stop_timeout
        self.topics = list(topics)
        self.pid: int | None = None
        self.exit_code: int | None = None
        self._cpu = 0.0
        self._hwm: int | None = None
        LOGS_DIR.mkdir(parents=True, exist_ok=True)
        self.log = LOGS_DIR / f"{name}.log"

    def __call__(self, stop: threading.Event) -> None:
        with self.log.open("wb") as log:
            proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=REPO)
            self.pid = proc.pid
            try:
                while not stop.wait(0.1):
                    if proc.poll() is not None:
                        raise RuntimeError(f"{self.name} exited with {proc.returncode} before the end; "
                                           f"log {self.log}:\n{self.tail()}")
                self.cpu()
                self.peak_rss()
                proc.send_signal(self.stop_signal)
                try:
                    self.exit_code = proc.wait(self.stop_timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    self.exit_code = proc.wait(10)
                    raise RuntimeError(f"{self.name} did not stop within {self.stop_timeout:g} s (killed)") from None
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(10)

    def cpu(self) -> float:
        value = process_cpu(self.pid)
        if value is not None:
            self._cpu = value
        return self._cpu

    def peak_rss(self) -> int | None:
        kb = proc_status_kb(self.pid, "VmHWM")
        if kb is not None:
            self._hwm = kb * 1024
        return self._hwm

    def tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""
