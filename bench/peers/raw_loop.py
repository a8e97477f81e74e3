"""The raw confluent-kafka loop of ``bench.passthrough`` as its own process (for ``bench.peers``).

    .venv/bin/python -m bench.peers.raw_loop [--eager] BOOTSTRAP SOURCE OUTPUT [MIDDLE1 MIDDLE2]

With MIDDLE1 MIDDLE2 (existing topics), three loops run on three threads of this process:
SOURCE -> MIDDLE1 -> MIDDLE2 -> OUTPUT, the shape of a 3-node kstream chain in one worker.
``--eager``: loops that take what is there instead of waiting for a batch to fill (the latency
baseline; see :func:`bench.passthrough.raw`).
Runs until SIGTERM/SIGINT, then commits what it produced and exits 0.
"""

from __future__ import annotations

import itertools
import signal
import sys
import threading

from bench.passthrough import raw


def main() -> int:
    args = sys.argv[1:]
    eager = args[:1] == ["--eager"]
    bootstrap, source, output, *middle = args[1:] if eager else args
    names = [source, *middle[:2], output]
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    errors: list[BaseException] = []

    def stage(src: str, dst: str) -> None:
        try:
            raw(bootstrap, src, dst, eager=eager)(stop)
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
