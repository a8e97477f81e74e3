"""The raw confluent-kafka loop of ``bench.passthrough`` as its own process (for ``bench.peers``).

    .venv/bin/python -m bench.peers.raw_loop [--eager] [--envelope] BOOTSTRAP SOURCE OUTPUT [MIDDLE1 MIDDLE2]

With MIDDLE1 MIDDLE2 (existing topics), three loops run on three threads of this process:
SOURCE -> MIDDLE1 -> MIDDLE2 -> OUTPUT, the shape of a 3-node kstream chain in one worker.
``--eager``: loops that take what is there instead of waiting for a batch to fill (the latency
baseline; see :func:`bench.passthrough.raw`). ``--envelope``: each output gets the six headers
a kstream node writes (:func:`bench.passthrough.envelope_headers`) instead of the input's.
Runs until SIGTERM/SIGINT, then commits what it produced and exits 0.
"""

from __future__ import annotations

import argparse
import itertools
import signal
import sys
import threading

from bench.passthrough import raw


def main() -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.peers.raw_loop")
    ap.add_argument("--eager", action="store_true", help="take what is there instead of waiting for a batch to fill")
    ap.add_argument("--envelope", action="store_true", help="write kstream's six headers on every output")
    ap.add_argument("bootstrap")
    ap.add_argument("topics", nargs="+", metavar="TOPIC", help="SOURCE OUTPUT [MIDDLE1 MIDDLE2]")
    args = ap.parse_args()
    if len(args.topics) not in (2, 4):
        ap.error("give SOURCE OUTPUT, optionally followed by MIDDLE1 MIDDLE2")
    bootstrap, eager, envelope = args.bootstrap, args.eager, args.envelope
    source, output, *middle = args.topics
    names = [source, *middle, output]
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    errors: list[BaseException] = []

    def stage(src: str, dst: str) -> None:
        try:
            raw(bootstrap, src, dst, eager=eager, envelope=envelope)(stop)
        except BaseException as exc:
            errors.append(exc)
            stop.set()

    threads = [threading.Thread(target=stage, args=(s, d), name=f"raw-{i}") for i, (s, d) in enumerate(itertools.pairwise(names))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return 0


if __name__ == "__main__":
    sys.exit(main())
