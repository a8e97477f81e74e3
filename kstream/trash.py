"""Trash entries: a failed message, untouched, with why and where it failed (design.md s.5).

Entries are Avro records (``schemas/trash_entry.avsc``) on the compacted ``{ns}.trash``
topic, keyed by entry id. The id is derived from where the message failed (node and input
position), so an at-least-once redelivery of the same failure overwrites its own entry
instead of adding a second one.
"""

from __future__ import annotations

import hashlib
import traceback
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kstream import headers as hdr
from kstream.codecs import AvroCodec
from kstream.errors import DecodeError
from kstream.kafka.port import TopicReader, latest_by_key
from kstream.schemas import schema_path
from kstream.types import Attempt, HeaderList, Record

REASON_DECODE = "decode"
REASON_VALIDATION = "validation"
REASON_ERROR = "error"
REASON_HOP_LIMIT = "hop limit"
REASON_PARKED = "parked"


@dataclass(frozen=True)
class TrashEntry:
    id: str
    topology: str
    node: str
    reason: str
    error_type: str
    error_message: str
    traceback: str
    key: bytes | None
    value: bytes | None
    headers: HeaderList
    topic: str
    partition: int
    offset: int
    workflow: str | None
    attempts: tuple[Attempt, ...]
    first_failure: datetime
    last_failure: datetime
    edited: bool = False
    parked_behind: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def to_avro(self) -> dict[str, Any]:
        return {
            "id": self.id, "topology": self.topology, "node": self.node, "reason": self.reason,
            "error_type": self.error_type, "error_message": self.error_message,
            "traceback": self.traceback, "key": self.key, "value": self.value,
            "headers": [{"key": k, "value": v} for k, v in self.headers],
            "topic": self.topic, "partition": self.partition, "offset": self.offset,
            "workflow": self.workflow,
            "attempts": [{"time": a.time, "error": a.error} for a in self.attempts],
            "first_failure": self.first_failure, "last_failure": self.last_failure,
            "edited": self.edited, "parked_behind": self.parked_behind,
        }

    @classmethod
    def from_avro(cls, rec: dict[str, Any]) -> TrashEntry:
        return cls(
            id=rec["id"], topology=rec["topology"], node=rec["node"], reason=rec["reason"],
            error_type=rec["error_type"], error_message=rec["error_message"],
            traceback=rec["traceback"], key=rec["key"], value=rec["value"],
            headers=[(h["key"], h["value"]) for h in rec["headers"]],
            topic=rec["topic"], partition=rec["partition"], offset=rec["offset"],
            workflow=rec["workflow"],
            attempts=tuple(Attempt(a["time"], a["error"]) for a in rec["attempts"]),
            first_failure=rec["first_failure"], last_failure=rec["last_failure"],
            edited=rec["edited"], parked_behind=rec["parked_behind"],
        )


def entry_id(topology: str, node: str, topic: str, partition: int, offset: int) -> str:
    return hashlib.sha256(f"{topology}/{node}/{topic}/{partition}/{offset}".encode()).hexdigest()[:20]


def reason_of(exc: BaseException) -> str:
    if isinstance(exc, DecodeError):
        return exc.reason
    return REASON_ERROR


def failure_entry(
    msg: Record,
    *,
    topology: str,
    node: str,
    exc: BaseException,
    workflow: str | None,
    attempts: tuple[Attempt, ...] = (),
    reason: str | None = None,
) -> TrashEntry:
    """The entry for ``msg`` failing at ``node`` with ``exc`` (the last attempt's error)."""
    now = datetime.now(UTC)
    message = str(exc) or type(exc).__name__
    history = attempts or (Attempt(now, f"{type(exc).__name__}: {message}"),)
    topic, partition, offset = msg.topic() or "", msg.partition() or 0, msg.offset() or 0
    headers = list(msg.headers() or [])
    source = hdr.retry_source(headers)
    if source is not None:  # failed on a retry: the entry points at the original input
        topic, partition, offset = source
        headers = hdr.strip_retry(headers)
    return TrashEntry(
        id=entry_id(topology, node, topic, partition, offset),
        topology=topology, node=node, reason=reason or reason_of(exc),
        error_type=type(exc).__name__, error_message=message,
        traceback="".join(traceback.format_exception(exc)) if exc.__traceback__ else "",
        key=msg.key(), value=msg.value(), headers=headers,
        topic=topic, partition=partition, offset=offset, workflow=workflow,
        attempts=history, first_failure=history[0].time, last_failure=history[-1].time,
    )


class TrashCodec:
    """Encodes and decodes entries with the schema parsed once."""

    def __init__(self) -> None:
        self._avro = AvroCodec(schema_path("trash_entry.avsc"))

    def encode(self, entry: TrashEntry) -> bytes:
        return self._avro.encode(entry.to_avro())

    def decode(self, data: bytes) -> TrashEntry:
        return TrashEntry.from_avro(self._avro.decode(data))


def may_contain(value: bytes, *names: str | None) -> bool:
    """False when an encoded entry cannot have these topology / node names, decided without
    decoding it: Avro writes a string as its UTF-8 bytes, so each name must occur in the record."""
    return all(name.encode() in value for name in names if name is not None)


def blocking_keys(reader: TopicReader, topic: str, *, topology: str, node: str, timeout: float = 30.0) -> dict[bytes | None, str]:
    """For a node that parks keys: key -> id of the unresolved entry that blocks it (the latest
    failure of the key that is not itself a parked message).

    Read once, when a worker starts, so parking survives restarts; only entries that may be the
    node's are decoded. From then on the node keeps the map itself (it adds what it trashes, and
    a replay or release of the blocking entry lets the key go): it does not follow the topic,
    because a replay's tombstone can be read before the replayed message arrives, and letting
    the key go then would let later messages overtake it."""
    codec = TrashCodec()
    blocking: dict[bytes | None, TrashEntry] = {}
    for rec in latest_by_key(reader.read_compacted(topic, timeout)).values():
        value = rec.value()
        if value is None or not may_contain(value, topology, node):
            continue
        entry = codec.decode(value)
        if entry.topology != topology or entry.node != node or entry.parked_behind is not None:
            continue
        held = blocking.get(entry.key)
        if held is None or held.last_failure < entry.last_failure:
            blocking[entry.key] = entry
    return {key: entry.id for key, entry in blocking.items()}
