"""faust-streaming pass-through agent, run in ``bench/.venv-faust`` by ``bench/peers.py``.

    bench/.venv-faust/bin/python bench/peers/faust_app.py BOOTSTRAP SOURCE OUTPUT GROUP

One agent (concurrency 1) over SOURCE, raw bytes in and out, each event sent on to OUTPUT
with its key. The app id is GROUP (faust's consumer group). It reads from the beginning
(``consumer_auto_offset_reset="earliest"``) and commits on faust's defaults (every 2.8 s or
10,000 messages). Runs the faust worker without its web server; stops on SIGTERM/SIGINT.
"""

from __future__ import annotations

import os
import sys
import tempfile

import faust


def main() -> int:
    bootstrap, source, output, group = sys.argv[1:5]
    datadir = tempfile.mkdtemp(prefix="bench-faust-")
    app = faust.App(
        group, broker=f"kafka://{bootstrap}", datadir=datadir, value_serializer="raw", key_serializer="raw",
        consumer_auto_offset_reset="earliest", producer_linger=float(os.environ.get("BENCH_FAUST_LINGER", "0")),
        topic_allow_declare=False, topic_disable_leader=True, web_enabled=False,
    )  # fmt: skip
    src = app.topic(source, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
    out = app.topic(output, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")

    @app.agent(src)
    async def passthrough(stream):  # type: ignore[no-untyped-def]
        async for event in stream.events():
            await out.send(key=event.key, value=event.value)

    sys.argv = [sys.argv[0], "worker", "--loglevel", "warn", "--without-web"]
    app.main()
    return 0


if __name__ == "__main__":
    sys.exit(main())
