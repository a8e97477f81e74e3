"""Global rate limit across worker processes: the acceptance scenario of the rate limiter.

    .venv/bin/python -m bench.ratelimit [--workers 4] [--rate 100] [--seconds 20]

``--workers`` processes (spawned) each run one :class:`kstream.limits.GlobalRateLimiter` on the
same service and call a fake service (it only records the wall-clock time of each call) from
``--threads`` threads as fast as the limiter admits. Phases, on one timeline:

1. **steady**: once every worker holds a share, ``--seconds`` of calls: the most calls in any
   1-second window (sliding: every call starts a window) must be <= 110% of the rate, the mean
   >= 90%.
2. **clean leave**: one worker stops (``close`` leaves the group): how long until the others
   make >= 90% of the rate in the trailing second, and until their shares add up to the limit.
3. **kill**: another worker is SIGKILLed (no leave: the broker notices at its session timeout):
   the same two times.
4. **join**: a fresh worker starts: how long until it holds a share, and the windows meanwhile.

The 1-second window maximum is also taken over the whole timeline (phases 1-4). Prints the
figures and writes ``bench/results/ratelimit.json``. Exit status 0 unless the run broke.
"""

from __future__ import annotations

import argparse
import bisect
import multiprocessing
import os
import signal
import sys
import tempfile
import threading
import time
import uuid
from multiprocessing.sharedctypes import SynchronizedArray
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

from bench.common import BenchError, broker, create_topics, delete_topics, write_json

SERVICE = "erp"
OBSERVE = 10.0
"""Seconds each leave/kill/join phase is watched (the kill needs the 6 s session timeout)."""


# -- a worker process -----------------------------------------------------------------------------


def worker(index: int, bootstrap: str, namespace: str, rate: float, threads: int, log: str,
           owned: SynchronizedArray[Any], stop: Event) -> None:
    """Call the fake service through the limiter until ``stop``; append call times to ``log``."""
    from kstream.app import limiter
    from kstream.config import load_settings

    settings = load_settings(environ={}, overrides={
        "bootstrap_servers": bootstrap, "namespace": namespace, "limits": {SERVICE: {"rate": rate, "per": "1s"}},
    })
    lim = limiter(SERVICE, settings)
    calls: list[float] = []
    lock = threading.Lock()

    def call() -> None:
        while not stop.is_set():
            lim.acquire()
            with lock:
                calls.append(time.time())  # the fake service: the call happened now

    lim.start()
    for i in range(threads):
        threading.Thread(target=call, name=f"caller-{i}", daemon=True).start()
    with open(log, "a") as out:
        while not stop.wait(0.05):
            owned[index] = lim.owned
            with lock:
                batch, calls[:] = list(calls), []
            out.write("".join(f"{t:.6f}\n" for t in batch))
            out.flush()  # a SIGKILLed worker's calls are on disk up to 50 ms before it died
        lim.close()
        owned[index] = 0
        with lock:
            out.write("".join(f"{t:.6f}\n" for t in calls))


# -- measuring ------------------------------------------------------------------------------------


class Run:
    def __init__(self, bootstrap: str, namespace: str, rate: float, threads: int, slots: int, logs: Path) -> None:
        self.ctx = multiprocessing.get_context("spawn")  # no fork: the parent has librdkafka threads
        self.bootstrap, self.namespace, self.rate, self.threads, self.logs = bootstrap, namespace, rate, threads, logs
        self.owned = self.ctx.Array("i", slots)
        self.procs: dict[int, Any] = {}
        self.stops: dict[int, Event] = {}

    def start(self, index: int) -> None:
        stop = self.ctx.Event()
        proc = self.ctx.Process(target=worker, name=f"worker-{index}", daemon=True, args=(
            index, self.bootstrap, self.namespace, self.rate, self.threads, str(self.logs / f"{index}.log"), self.owned, stop))
        proc.start()
        self.procs[index], self.stops[index] = proc, stop

    def stop(self, index: int) -> None:
        self.stops[index].set()
        self.procs[index].join(30)
        if self.procs[index].is_alive():
            raise BenchError(f"worker {index} did not stop within 30 s")

    def kill(self, index: int) -> None:
        os.kill(self.procs[index].pid, signal.SIGKILL)
        self.procs[index].join(10)
        self.owned[index] = 0  # it cannot say so itself

    def wait_shares(self, members: list[int], timeout: float = 60.0) -> float:
        """Seconds until ``members`` each hold a share and together all partitions."""
        from kstream.limits import LIMITS_PARTITIONS

        t0 = time.time()
        while True:
            owned = [self.owned[i] for i in members]
            if all(owned) and sum(owned) == LIMITS_PARTITIONS:
                return time.time() - t0
            for i in members:
                if not self.procs[i].is_alive():
                    raise BenchError(f"worker {i} died (exit code {self.procs[i].exitcode})")
            if time.time() - t0 > timeout:
                raise BenchError(f"shares did not settle within {timeout:g} s: {owned}")
            time.sleep(0.01)

    def calls(self) -> list[float]:
        return sorted(float(line) for f in self.logs.glob("*.log") for line in f.read_text().split())


def max_window(calls: list[float], start: float, end: float, width: float = 1.0) -> int:
    """The most calls in any ``width``-second window starting at a call in [start, end - width]."""
    lo, hi = bisect.bisect_left(calls, start), bisect.bisect_left(calls, end - width)
    return max((bisect.bisect_left(calls, calls[i] + width) - i for i in range(lo, hi + 1) if i < len(calls)), default=0)


def recovered_after(calls: list[float], event: float, level: float, until: float) -> float | None:
    """Seconds from ``event`` until a second holding >= ``level`` calls begins (0: no dip below it)."""
    t = event
    while t + 1.0 <= until:
        if bisect.bisect_left(calls, t + 1.0) - bisect.bisect_left(calls, t) >= level:
            return t - event
        t += 0.01
    return None


def min_window(calls: list[float], start: float, end: float, width: float = 1.0) -> int:
    """The fewest calls in a ``width``-second window starting in [start, end - width] (10 ms steps)."""
    counts = [bisect.bisect_left(calls, start + k / 100 + width) - bisect.bisect_left(calls, start + k / 100)
              for k in range(int((end - width - start) * 100) + 1)]
    return min(counts, default=0)


def watch(run: Run, members: list[int], since: float, seconds: float) -> float | None:
    """Sample shares until ``since + seconds``; seconds from ``since`` until ``members`` each held
    a share and together all partitions (None: not within the time)."""
    from kstream.limits import LIMITS_PARTITIONS

    settled = None
    while time.time() < since + seconds:
        owned = [run.owned[i] for i in members]
        if settled is None and all(owned) and sum(owned) == LIMITS_PARTITIONS:
            settled = time.time() - since
        time.sleep(0.01)
    return settled


def bench(bootstrap: str, args: argparse.Namespace) -> dict[str, Any]:
    from kstream.limits import LIMITS_PARTITIONS, limits_topic

    namespace = f"bench-rl-{uuid.uuid4().hex[:8]}"
    topic = limits_topic(namespace)
    create_topics(bootstrap, [topic], LIMITS_PARTITIONS)
    rate, n = args.rate, args.workers
    level = 0.9 * rate
    try:
        with tempfile.TemporaryDirectory(prefix="kstream-bench-rl-") as tmp:
            run = Run(bootstrap, namespace, rate, args.threads, n + 1, Path(tmp))
            try:
                begun = time.time()
                for i in range(n):
                    run.start(i)
                joined = run.wait_shares(list(range(n)))
                print(f"{n} workers hold their shares after {time.time() - begun:.1f} s "
                      f"({[run.owned[i] for i in range(n)]})", flush=True)
                t0 = time.time() + 0.5  # the first calls at the new share are settled
                time.sleep(0.5 + args.seconds)
                t1 = t0 + args.seconds
                # clean leave
                leave_at = time.time()
                run.stop(n - 1)
                leave_settled = watch(run, list(range(n - 1)), leave_at, OBSERVE)
                # kill
                kill_at = time.time()
                run.kill(n - 2)
                kill_settled = watch(run, list(range(n - 2)), kill_at, OBSERVE)
                # join
                join_at = time.time()
                run.start(n)
                join_settled = watch(run, [*range(n - 2), n], join_at, OBSERVE / 2)
                end = time.time()
            finally:
                for i in list(run.procs):
                    if run.procs[i].is_alive():
                        run.stop(i)
            calls = run.calls()
    finally:
        if os.environ.get("KSTREAM_BENCH_BOOTSTRAP"):
            delete_topics(bootstrap, [topic])
    steady = calls[bisect.bisect_left(calls, t0): bisect.bisect_left(calls, t1)]
    per_second = [bisect.bisect_left(calls, t0 + k + 1) - bisect.bisect_left(calls, t0 + k) for k in range(int(args.seconds))]
    return {
        "workers": n, "rate": rate, "seconds": args.seconds, "threads_per_worker": args.threads,
        "join_s": round(joined, 2),
        "steady": {
            "calls": len(steady), "mean_per_s": round(len(steady) / args.seconds, 1),
            "max_1s_window": max_window(calls, t0, t1), "per_second": per_second,
        },
        "clean_leave": {
            "rate_back_s": _round(recovered_after(calls, leave_at, level, kill_at)),
            "shares_settled_s": _round(leave_settled),
            "max_1s_window": max_window(calls, leave_at, kill_at),
            "min_1s_window": min_window(calls, leave_at, kill_at),
        },
        "sigkill": {
            "rate_back_s": _round(recovered_after(calls, kill_at, level, join_at)),
            "shares_settled_s": _round(kill_settled),
            "max_1s_window": max_window(calls, kill_at, join_at),
            "min_1s_window": min_window(calls, kill_at, join_at),
        },
        "join": {"shares_settled_s": _round(join_settled), "max_1s_window": max_window(calls, join_at, end)},
        "max_1s_window_whole_run": max_window(calls, t0, end),
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--rate", type=float, default=100.0, help="calls per second, for all workers together")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of the steady phase")
    parser.add_argument("--threads", type=int, default=2, help="calling threads per worker process")
    args = parser.parse_args(argv)
    if args.workers < 3:
        parser.error("--workers must be at least 3 (one leaves, one is killed)")
    try:
        with broker() as b:
            result = bench(b.bootstrap, args)
    except BenchError as exc:
        print(f"benchmark broke: {exc}", file=sys.stderr)
        return 1
    rate, steady = args.rate, result["steady"]
    ok_window = result["max_1s_window_whole_run"] <= 1.1 * rate
    ok_mean = steady["mean_per_s"] >= 0.9 * rate
    print(f"steady {args.seconds:g} s, {args.workers} workers at {rate:g}/s:")
    print(f"  max calls in any 1-s window: {steady['max_1s_window']} (whole run incl. leave/kill/join: "
          f"{result['max_1s_window_whole_run']}; limit {1.1 * rate:g})  {'ok' if ok_window else 'OVER'}")
    print(f"  mean rate: {steady['mean_per_s']}/s (needs >= {0.9 * rate:g})  {'ok' if ok_mean else 'LOW'}")
    print(f"  per second: {steady['per_second']}")
    for phase, what in (("clean_leave", "one worker leaves"), ("sigkill", "one worker is SIGKILLed")):
        r = result[phase]
        print(f"{what}: shares add up again after {r['shares_settled_s']} s; a second of >= {0.9 * rate:g} calls "
              f"begins {r['rate_back_s']} s after; 1-s windows min {r['min_1s_window']} max {r['max_1s_window']}")
    print(f"a worker joins: shares settled after {result['join']['shares_settled_s']} s; "
          f"max 1-s window {result['join']['max_1s_window']}")
    path = write_json("ratelimit", {**result, "ok": ok_window and ok_mean})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
