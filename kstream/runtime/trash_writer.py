"""The Trash writer: a node's failed messages, one Trash entry each, with a log line."""

from __future__ import annotations

import logging
from collections.abc import Callable

from kstream import headers as hdr
from kstream.metrics import NodeStats
from kstream.trash import TrashCodec, TrashEntry
from kstream.types import HeaderList

Produce = Callable[[str, bytes | None, bytes | None, HeaderList | None], None]


class TrashWriter:
    """Queues Trash entries on the node's producer (flushed before the input offset commits)."""

    def __init__(self, topic: str, produce: Produce, log: logging.Logger, log_node: dict[str, str],
                 stats: NodeStats | None) -> None:
        self._topic = topic
        self._produce = produce
        self._codec = TrashCodec()
        self._log = log
        self._log_node = log_node
        self._stats = stats
        self.written = 0

    def write(self, entry: TrashEntry) -> None:
        self.written += 1
        if self._stats is not None:
            self._stats.trashed += 1
        self._log.warning("message %s/%d/%d to trash %s: %s: %s", entry.topic, entry.partition, entry.offset,
                          entry.id, entry.error_type, entry.error_message,
                          extra={**self._log_node, "topic": entry.topic, "partition": entry.partition,
                                 "offset": entry.offset, "trash_id": entry.id,
                                 "kstream_id": hdr.get_str(entry.headers, hdr.ID)
                                 or f"{entry.topic}/{entry.partition}/{entry.offset}"})
        self._produce(self._topic, self._codec.encode(entry), entry.id.encode(), None)
