"""faust-streaming pass-through (or a 3-agent chain), run in ``bench/.venv-faust`` by ``bench/peers.py``.

    bench/.venv-faust/bin/python bench/peers/faust_app.py BOOTSTRAP SOURCE OUTPUT GROUP [MIDDLE1 MIDDLE2]

Configured as faust's documentation recommends for throughput (its settings reference):

* ``Topic.send_soon`` instead of ``await Topic.send`` per event: the record goes into faust's
  producer buffer and the agent moves on; faust flushes the buffer before it commits.
* producer batching: ``producer_linger`` 10 ms and ``producer_max_batch_size`` 1 MB (the
  values librdkafka uses for kstream: a batch of up to 1,000,000 bytes; linger 5-10 ms);
* ``stream_buffer_maxsize`` 65,536: the docs name 131,072 for "over 30,000 events a second"
  and warn against buffers that large when the agent also sends; half of it, with faust's
  default commits (every 2.8 s or 10,000 messages), keeps what a commit waits for bounded.

Raw bytes in and out (no codec work), ``consumer_auto_offset_reset="earliest"``, acks=all
(faust's default), no web server. With MIDDLE1 MIDDLE2 (existing topics) three agents form a
chain SOURCE -> MIDDLE1 -> MIDDLE2 -> OUTPUT in this one worker. Stops on SIGTERM/SIGINT.
"""

from __future__ import annotations

import itertools
import sys
import tempfile
from typing import Any

import faust

LINGER_S = 0.010
MAX_BATCH_BYTES = 1_000_000
STREAM_BUFFER = 65_536


def main() -> int:
    bootstrap, source, output, group = sys.argv[1:5]
    middle = sys.argv[5:7]
    datadir = tempfile.mkdtemp(prefix="bench-faust-")
    app = faust.App(
        group, broker=f"kafka://{bootstrap}", datadir=datadir, value_serializer="raw", key_serializer="raw",
        consumer_auto_offset_reset="earliest", producer_linger=LINGER_S, producer_max_batch_size=MAX_BATCH_BYTES,
        stream_buffer_maxsize=STREAM_BUFFER, topic_allow_declare=False, topic_disable_leader=True, web_enabled=False,
    )  # fmt: skip
    names = [source, *middle, output]
    topics = [app.topic(n, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw") for n in names]

    def forward(src: Any, dst: Any, name: str) -> None:
        async def agent(stream: Any) -> None:
            async for event in stream.events():
                dst.send_soon(key=event.key, value=event.value)

        agent.__name__ = agent.__qualname__ = name  # faust names an agent (and its group member) after its function
        app.agent(src)(agent)

    for i, (src, dst) in enumerate(itertools.pairwise(topics)):
        forward(src, dst, f"stage{i}")

    sys.argv = [sys.argv[0], "worker", "--loglevel", "warn", "--without-web"]
    app.main()
    return 0


if __name__ == "__main__":
    sys.exit(main())
