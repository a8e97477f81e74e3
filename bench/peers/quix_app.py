"""Quix Streams pass-through (or a 3-stage chain), run in ``bench/.venv-quix`` by ``bench/peers.py``.

    bench/.venv-quix/bin/python bench/peers/quix_app.py BOOTSTRAP SOURCE OUTPUT GROUP [MIDDLE1 MIDDLE2]

An ``Application`` reading SOURCE from the beginning (``auto_offset_reset="earliest"``),
values and keys as ``bytes`` (no JSON work, like the kstream ``bytes`` node), straight
``to_topic(OUTPUT)``. Everything else is Quix's default: at-least-once, a checkpoint
(producer flush + offset commit) every 5 s, an idempotent producer. With MIDDLE1 MIDDLE2
(existing topics) one application holds three dataframes, SOURCE -> MIDDLE1 -> MIDDLE2 ->
OUTPUT. Stops on SIGTERM/SIGINT.
"""

from __future__ import annotations

import itertools
import sys
import tempfile

from quixstreams import Application


def main() -> int:
    bootstrap, source, output, group = sys.argv[1:5]
    middle = sys.argv[5:7]
    with tempfile.TemporaryDirectory(prefix="bench-quix-") as state:
        app = Application(
            broker_address=bootstrap, consumer_group=group, auto_offset_reset="earliest", loglevel="WARNING",
            auto_create_topics=False, use_changelog_topics=False, state_dir=state,
        )  # fmt: skip
        names = [source, *middle, output]
        for src, dst in itertools.pairwise(names):
            sdf = app.dataframe(app.topic(src, key_deserializer="bytes", value_deserializer="bytes"))
            sdf.to_topic(app.topic(dst, key_serializer="bytes", value_serializer="bytes"))
        app.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
