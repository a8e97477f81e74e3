"""Key parking (``on_failure="park_key"``): a key whose message waits in the Trash stops flowing.

While a message of a key waits in the Trash, later ones of the key go there too ("parked
behind" it), in order, instead of overtaking it. The replay of the blocking entry, or the
release of its parked messages when it is discarded, lets the key flow again.
"""

from __future__ import annotations

from dataclasses import replace

from kstream import headers as hdr
from kstream.errors import Permanent
from kstream.metrics import NodeStats
from kstream.runtime.trash_writer import TrashWriter
from kstream.trash import REASON_PARKED, TrashEntry, failure_entry
from kstream.types import Record


class KeyParking:
    """The parked keys of one node: key -> id of the Trash entry its messages wait behind."""

    def __init__(self, parked: dict[bytes | None, str] | None, *, topology: str, node: str, trash: TrashWriter,
                 stats: NodeStats | None) -> None:
        self._parked = dict(parked or {})
        self._topology = topology
        self._node = node
        self._trash = trash
        self._stats = stats

    def held_back(self, msg: Record) -> bool:
        """True when ``msg`` was parked (written to the Trash behind its key's blocker)."""
        key = msg.key()
        blocker = self._parked.get(key)
        if blocker is None:
            return False
        headers = msg.headers()
        lets_go = hdr.get(headers, hdr.REPLAY_OF) or b"", hdr.get(headers, hdr.RELEASE_OF) or b""
        if blocker.encode() in lets_go:
            del self._parked[key]
            return False
        entry = failure_entry(msg, topology=self._topology, node=self._node, reason=REASON_PARKED,
                              exc=Permanent(f"parked behind {blocker}"), workflow=hdr.get_str(headers, hdr.WORKFLOW))
        self._trash.write(replace(entry, error_type="Parked", parked_behind=blocker))
        if self._stats is not None:
            self._stats.parked += 1
        return True

    def park(self, msg: Record, entry: TrashEntry) -> None:
        """``msg`` went to the Trash as ``entry``: its key's later messages wait behind it."""
        self._parked[msg.key()] = entry.id
