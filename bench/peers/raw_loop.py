"""The raw confluent-kafka loop of ``bench.passthrough`` as its own process (for ``bench.peers``).

    .venv/bin/python -m bench.peers.raw_loop BOOTSTRAP SOURCE OUTPUT

Runs until SIGTERM/SIGINT, then commits what it produced and exits 0.
"""

from __future__ import annotations

import signal
import sys
import threading

from bench.passthrough import raw


def main() -> int:
    bootstrap, source, output = sys.argv[1:4]
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    raw(bootstrap, source, output)(stop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
