"""Quix Streams pass-through, run in ``bench/.venv-quix`` by ``bench/peers.py``.

    bench/.venv-quix/bin/python bench/peers/quix_app.py BOOTSTRAP SOURCE OUTPUT GROUP

An ``Application`` reading SOURCE from the beginning (``auto_offset_reset="earliest"``),
values and keys as ``bytes`` (no JSON work, like the kstream ``bytes`` node), straight
``to_topic(OUTPUT)``. Everything else is Quix's default: at-least-once, a checkpoint
(producer flush + offset commit) every 5 s, an idempotent producer. Stops on SIGTERM/SIGINT.
"""

from __future__ import annotations

import sys
import tempfile

from quixstreams import Application


def main() -> int:
    bootstrap, source, output, group = sys.argv[1:5]
    with tempfile.TemporaryDirectory(prefix="bench-quix-") as state:
        app = Application(
            broker_address=bootstrap, consumer_group=group, auto_offset_reset="earliest", loglevel="WARNING",
            auto_create_topics=False, use_changelog_topics=False, state_dir=state,
        )  # fmt: skip
        src = app.topic(source, key_deserializer="bytes", value_deserializer="bytes")
        out = app.topic(output, key_serializer="bytes", value_serializer="bytes")
        sdf = app.dataframe(src)
        sdf.to_topic(out)
        app.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
