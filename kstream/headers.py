"""The envelope: kstream's headers on every message it writes (design.md s.3).

All are optional on input, so plain Kafka clients can feed kstream; missing ones are filled:
a record without ``kstream-id`` is named by its position (``topic/partition/offset``) and
starts a new workflow.
"""

from __future__ import annotations

import itertools
import secrets
from dataclasses import dataclass

from kstream.types import HeaderList

ID = "kstream-id"
WORKFLOW = "kstream-workflow"
PARENT = "kstream-parent"
HOPS = "kstream-hops"
ATTEMPT = "kstream-attempt"
ORIGIN = "kstream-origin"
REPLAY_OF = "kstream-replay-of"
TRACEPARENT = "traceparent"
# Set per message by the writer, never copied from an input to its outputs.
_NOT_INHERITED = frozenset({ID, WORKFLOW, PARENT, HOPS, ATTEMPT, ORIGIN, REPLAY_OF})


class IdGenerator:
    """Unique message ids without a syscall per message: a random process prefix and a counter."""

    __slots__ = ("_count", "_prefix")

    def __init__(self) -> None:
        self._prefix = secrets.token_hex(8) + "-"
        self._count = itertools.count(1)

    def __call__(self) -> str:
        return self._prefix + format(next(self._count), "x")


@dataclass(slots=True)
class Envelope:
    """What an input message tells about its lineage."""

    message_id: str
    workflow: str | None
    hops: int
    attempt: int
    carried: HeaderList
    """Headers passed on unchanged to outputs (``traceparent`` and any foreign ones)."""

    def outgoing(self, origin: str, new_workflow: str) -> HeaderList:
        """Headers of an output of this message, except ``kstream-id`` (one per output)."""
        return [
            (WORKFLOW, (self.workflow or new_workflow).encode()),
            (PARENT, self.message_id.encode()),
            (HOPS, str(self.hops + 1).encode()),
            (ATTEMPT, b"1"),
            (ORIGIN, origin.encode()),
            *self.carried,
        ]


def read(headers: HeaderList | None, topic: str, partition: int, offset: int) -> Envelope:
    """Parse an input's headers; raises ``ValueError`` on a kstream header that makes no sense."""
    message_id = workflow = None
    hops = 0
    attempt = 1
    carried: HeaderList = []
    if headers:
        for name, value in headers:
            if name not in _NOT_INHERITED:
                carried.append((name, value))
            elif value is None:
                continue
            elif name == ID:
                message_id = value.decode()
            elif name == WORKFLOW:
                workflow = value.decode()
            elif name == HOPS:
                hops = int(value)
            elif name == ATTEMPT:
                attempt = int(value)
        if hops < 0 or attempt < 1:
            raise ValueError(f"header {HOPS}={hops} / {ATTEMPT}={attempt} out of range")
    return Envelope(message_id or f"{topic}/{partition}/{offset}", workflow, hops, attempt, carried)


def get(headers: HeaderList | None, name: str) -> bytes | None:
    """The last value of header ``name``."""
    found = None
    for k, v in headers or ():
        if k == name:
            found = v
    return found
