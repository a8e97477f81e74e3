"""Global rate limit across worker processes with skewed work: the acceptance scenario of issue 17.

    .venv/bin/python -m bench.ratelimit [--rate 100] [--records 3000] [--variants skewed,sigterm,sigkill]

Four worker processes (spawned) each run one :class:`kstream.limits.GlobalRateLimiter` on the
same service, started before the work arrives (as ``kstream run`` does: its limiters start
before its consumers join their groups, which takes a second or two; here the work comes
``--warm`` 1 s after the last worker has read its first claim back). Each has a number of
*records* to handle; handling one is a call to a fake service that only records the wall-clock
time of the call, made from ``--threads`` threads as fast as the limiter admits. The work is
skewed as a consumer group would spread it over partitions that are not equally full: worker 0
gets half of ``--records``, worker 1 none, workers 2 and 3 a quarter each. All four get their
work at the same moment (``go``). Variants:

* ``skewed``: just that;
* ``sigterm``: ``--event-at`` seconds after go, worker 2 is SIGTERMed (it stops calling and gives
  its share up on the way out) and its unhandled records go to worker 1, as a rebalance of its
  partitions would hand them over (here at once);
* ``sigkill``: the same with SIGKILL (no goodbye: the others forget its claim after
  ``Timing.expire``); records it took but had not called for go to worker 1 too.

Figures per variant (from the call times of all workers): the busiest 1-second window (sliding:
every call starts one; target <= 105% of the rate), the mean rate over the steady part (from 1 s
after go to 1 s before the last call; target >= 97%), the total time from go to the last call
(target within 5% of records / rate; also from the first call, without the cold start); for
the kill variants the fewest calls in a 1-second window starting in the 5 s after the event
(the dip) and how long after the event until a 1-second window again holds >= 95% of the rate.
Writes ``bench/results/ratelimit.json`` with every round, the commit, versions and the load
average before and after. Exit status 0 unless the run broke.

``KSTREAM_BENCH_DEBUG=DIR`` keeps each worker's call times, its debug log and its claim and
share sampled every 20 ms under ``DIR`` (for looking into a dip).
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
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

from bench.common import BenchError, broker, create_topics, delete_topics, machine, versions, write_json
from bench.results import add_tree_args, check_tree

SERVICE = "erp"
WORKERS = 4
SHARES = (0.5, 0.0, 0.25, 0.25)
"""The part of the records each worker gets: one half, one none."""
VICTIM, HEIR = 2, 1
"""The worker stopped in the sigterm / sigkill variants, and the one its records go to."""
LEVEL = 0.95
"""A 1-second window with this part of the rate counts as full rate again."""


# -- a worker process -----------------------------------------------------------------------------


def worker(index: int, bootstrap: str, namespace: str, rate: float, threads: int, log: str, assigned: int,
           extra: Synchronized[int], done: Synchronized[int], ready: Event, go: Event) -> None:
    """Handle ``assigned`` records (and ``extra`` ones handed over later), each one limited call,
    until SIGTERM. Shared values are lock-free: ``extra`` is written by the parent only, ``done``
    by this worker only (a SIGKILL must not leave a lock held that the parent then waits on)."""
    from kstream.app import limiter
    from kstream.config import load_settings

    if os.environ.get("KSTREAM_BENCH_DEBUG"):
        import logging

        logging.basicConfig(filename=f"{log}.debug", level=logging.DEBUG, format="%(relativeCreated)d %(message)s")
        logging.getLogger("kstream.librdkafka").setLevel(logging.WARNING)
    stop = threading.Event()
    # Set from another thread: the main thread may be inside stop.wait, holding its lock.
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=stop.set).start())
    settings = load_settings(environ={}, overrides={
        "bootstrap_servers": bootstrap, "namespace": namespace, "limits": {SERVICE: {"rate": rate, "per": "1s"}},
    })
    lim = limiter(SERVICE, settings)
    calls: list[float] = []
    lock = threading.Lock()
    taken = [0]

    def take() -> bool:
        with lock:
            if taken[0] >= assigned + extra.value:
                return False
            taken[0] += 1
            return True

    def call() -> None:
        while not stop.is_set():
            if not take():
                stop.wait(0.01)  # no work (yet): the limiter sees no demand
                continue
            lim.acquire()
            with lock:
                calls.append(time.time())  # the fake service: the call happened now
                done.value += 1

    lim.start()
    while not lim.ready and not stop.wait(0.01):
        pass
    ready.set()
    go.wait()
    if os.environ.get("KSTREAM_BENCH_DEBUG"):
        def sample() -> None:
            with open(f"{log}.shares", "w") as out:
                while not stop.wait(0.02):
                    out.write(f"{time.time():.3f} {lim.claim} {lim.share:.2f}\n")

        threading.Thread(target=sample, daemon=True).start()
    callers = [threading.Thread(target=call, name=f"caller-{i}", daemon=True) for i in range(threads)]
    for t in callers:
        t.start()
    with open(log, "a") as out:
        while not stop.wait(0.05):
            with lock:
                batch, calls[:] = list(calls), []
            out.write("".join(f"{t:.6f}\n" for t in batch))
            out.flush()  # a SIGKILLed worker's calls are on disk up to 50 ms before it died
        lim.close()  # a claim of 0: the others take the share over at once (callers block from now on)
        with lock:
            out.write("".join(f"{t:.6f}\n" for t in calls))


# -- measuring ------------------------------------------------------------------------------------


class Run:
    def __init__(self, bootstrap: str, namespace: str, rate: float, threads: int, logs: Path) -> None:
        self.ctx = multiprocessing.get_context("spawn")  # no fork: the parent has librdkafka threads
        self.bootstrap, self.namespace, self.rate, self.threads, self.logs = bootstrap, namespace, rate, threads, logs
        self.go = self.ctx.Event()
        self.procs: list[Any] = []
        self.work: list[int] = []
        self.extra: list[Synchronized[int]] = []
        self.done: list[Synchronized[int]] = []

    def start(self, work: list[int]) -> None:
        readies = []
        for index, n in enumerate(work):
            ready = self.ctx.Event()
            extra, done = self.ctx.Value("i", 0, lock=False), self.ctx.Value("i", 0, lock=False)
            proc = self.ctx.Process(target=worker, name=f"worker-{index}", daemon=True, args=(
                index, self.bootstrap, self.namespace, self.rate, self.threads, str(self.logs / f"{index}.log"),
                n, extra, done, ready, self.go))
            proc.start()
            self.procs.append(proc)
            readies.append(ready)
            self.extra.append(extra)
            self.done.append(done)
        self.work = list(work)
        deadline = time.time() + 60
        while not all(r.is_set() for r in readies):
            for i, p in enumerate(self.procs):
                if not p.is_alive():
                    raise BenchError(f"worker {i} died before it was ready (exit code {p.exitcode})")
            if time.time() > deadline:
                raise BenchError("the workers were not ready within 60 s")
            time.sleep(0.05)

    def handled(self) -> int:
        return sum(d.value for d in self.done)

    def hand_over(self, victim: int, heir: int) -> int:
        """Give the stopped victim's unhandled records (taken but not called included) to ``heir``."""
        left = max(0, self.work[victim] + self.extra[victim].value - self.done[victim].value)
        self.extra[heir].value += left
        return left

    def stop_all(self) -> None:
        for p in self.procs:
            if p.is_alive():
                os.kill(p.pid, signal.SIGTERM)
        for i, p in enumerate(self.procs):
            p.join(30)
            if p.is_alive():
                p.kill()
                raise BenchError(f"worker {i} did not stop within 30 s")

    def calls(self) -> list[float]:
        return sorted(float(line) for f in self.logs.glob("*.log") for line in f.read_text().split())


def max_window(calls: list[float], width: float = 1.0) -> int:
    """The most calls in any ``width``-second window starting at a call."""
    return max((bisect.bisect_left(calls, t + width) - i for i, t in enumerate(calls)), default=0)


def window_at(calls: list[float], t: float, width: float = 1.0) -> int:
    return bisect.bisect_left(calls, t + width) - bisect.bisect_left(calls, t)


def one_round(bootstrap: str, variant: str, args: argparse.Namespace) -> dict[str, Any]:
    from kstream.limits import LIMITS_PARTITIONS, limits_topic

    namespace = f"bench-rl-{uuid.uuid4().hex[:8]}"
    topic = limits_topic(namespace)
    create_topics(bootstrap, [topic], LIMITS_PARTITIONS)
    rate, records = args.rate, args.records
    work = [int(records * s) for s in SHARES]
    work[0] += records - sum(work)
    event_at: float | None = None
    handed = 0
    try:
        with tempfile.TemporaryDirectory(prefix="kstream-bench-rl-") as tmp:
            logs = Path(os.environ.get("KSTREAM_BENCH_DEBUG") or tmp) / f"{namespace}-{variant}"
            logs.mkdir(parents=True)  # KSTREAM_BENCH_DEBUG=dir: call times and debug logs kept there
            run = Run(bootstrap, namespace, rate, args.threads, logs)
            try:
                run.start(work)
                # kstream run starts its limiters before its consumers join their groups (seconds):
                # by the first record a limiter has read the claims for a while (rule 3's G).
                time.sleep(args.warm)
                go = time.time()
                run.go.set()
                deadline = go + 3 * records / rate + 30
                while run.handled() < records:
                    now = time.time()
                    if variant != "skewed" and event_at is None and now >= go + args.event_at:
                        event_at = time.time()
                        os.kill(run.procs[VICTIM].pid, signal.SIGTERM if variant == "sigterm" else signal.SIGKILL)
                        run.procs[VICTIM].join(30)
                        handed = run.hand_over(VICTIM, HEIR)
                    if not all(p.is_alive() for i, p in enumerate(run.procs) if event_at is None or i != VICTIM):
                        raise BenchError("a worker died")
                    if now > deadline:
                        raise BenchError(f"the records were not handled within {deadline - go:.0f} s")
                    time.sleep(0.01)
            finally:
                run.stop_all()
            calls = [t for t in run.calls() if t >= go]
    finally:
        if os.environ.get("KSTREAM_BENCH_BOOTSTRAP"):
            delete_topics(bootstrap, [topic])
    end = calls[-1]
    steady = (go + 1.0, end - 1.0)
    in_steady = bisect.bisect_left(calls, steady[1]) - bisect.bisect_left(calls, steady[0])
    result: dict[str, Any] = {
        "variant": variant, "calls": len(calls), "records": records,
        "first_call_s": round(calls[0] - go, 2),
        "total_s": round(end - go, 2), "ideal_s": round(records / rate, 2),
        "total_over_ideal": round((end - go) / (records / rate), 3),
        "total_from_first_call_s": round(end - calls[0], 2),
        "steady_mean_per_s": round(in_steady / (steady[1] - steady[0]), 1),
        "max_1s_window": max_window(calls),
        "per_second": [window_at(calls, go + k) for k in range(int(end - go) + 1)],
    }
    if event_at is not None:
        t, back = event_at, None
        while t < end - 1.0:
            if window_at(calls, t) >= LEVEL * rate:
                back = t - event_at
                break
            t += 0.01
        starts = [event_at + k / 100 for k in range(0, 500) if event_at + k / 100 + 1.0 <= end]
        result |= {
            "event_at_s": round(event_at - go, 2), "handed_over": handed,
            "dip_min_1s_window": min((window_at(calls, s) for s in starts), default=None),
            "full_rate_back_after_s": None if back is None else round(back, 2),
        }
    return result


def check(r: dict[str, Any], rate: float) -> dict[str, bool]:
    return {
        "max_window": r["max_1s_window"] <= 1.05 * rate,
        "steady_mean": r["steady_mean_per_s"] >= 0.97 * rate,
        "total_time": r["total_over_ideal"] <= 1.05,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--rate", type=float, default=100.0, help="calls per second, for all workers together")
    parser.add_argument("--records", type=int, default=3000)
    parser.add_argument("--threads", type=int, default=2, help="calling threads per worker process")
    parser.add_argument("--variants", default="skewed,sigterm,sigkill")
    parser.add_argument("--event-at", type=float, default=10.0, help="seconds after go of the SIGTERM / SIGKILL")
    parser.add_argument("--repeat", type=int, default=1, help="rounds of each variant")
    parser.add_argument("--warm", type=float, default=1.0,
                        help="seconds between the last worker reading the claims and the work arriving")
    add_tree_args(parser)
    args = parser.parse_args(argv)
    tree = check_tree(args.allow_dirty)
    variants = [v for v in args.variants.split(",") if v]
    if not variants or set(variants) - {"skewed", "sigterm", "sigkill"}:
        parser.error("--variants: a comma-separated list of skewed, sigterm, sigkill")
    before = machine()
    rounds: list[dict[str, Any]] = []
    try:
        with broker() as b:
            info = versions(b)
            for _ in range(args.repeat):
                for variant in variants:
                    r = one_round(b.bootstrap, variant, args)
                    r["ok"] = check(r, args.rate)
                    r["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
                    rounds.append(r)
                    print(report_line(r, args.rate), flush=True)
    except BenchError as exc:
        print(f"benchmark broke: {exc}", file=sys.stderr)
        return 1
    path = write_json("ratelimit", tree=tree, data={
        "rate": args.rate, "records": args.records, "workers": WORKERS, "work_shares": list(SHARES),
        "threads_per_worker": args.threads, "event_at_s": args.event_at, "warm_s": args.warm,
        "versions": info, "machine_before": before, "machine_after": machine(), "rounds": rounds,
    })
    print(f"wrote {path}")
    return 0


def report_line(r: dict[str, Any], rate: float) -> str:
    ok = r["ok"]
    line = (f"{r['variant']:>8}: max 1-s window {r['max_1s_window']} (<= {1.05 * rate:g} {'ok' if ok['max_window'] else 'OVER'}), "
            f"steady mean {r['steady_mean_per_s']}/s (>= {0.97 * rate:g} {'ok' if ok['steady_mean'] else 'LOW'}), "
            f"total {r['total_s']} s for {r['ideal_s']} s ideal (x{r['total_over_ideal']} "
            f"{'ok' if ok['total_time'] else 'SLOW'}), first call after {r['first_call_s']} s, "
            f"{r['total_from_first_call_s']} s from the first call")
    if "event_at_s" in r:
        line += (f"; at {r['event_at_s']} s: dip to {r['dip_min_1s_window']} calls/s, full rate "
                 f"({LEVEL * rate:g}/s) back after {r['full_rate_back_after_s']} s, {r['handed_over']} records handed over")
    return line


if __name__ == "__main__":
    sys.exit(main())
