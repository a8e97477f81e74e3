"""The envelope: kstream's headers on every message it writes (design.md s.3).

All are optional on input, so plain Kafka clients can feed kstream; missing ones are filled:
a record without ``kstream-id`` is named by its position (``topic/partition/offset``) and
starts a new workflow.
"""

from __future__ import annotations

import itertools
import json
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

from kstream.errors import BadHeader
from kstream.types import Attempt, HeaderList, Record

ID = "kstream-id"
WORKFLOW = "kstream-workflow"
PARENT = "kstream-parent"
HOPS = "kstream-hops"
ATTEMPT = "kstream-attempt"
ORIGIN = "kstream-origin"
REPLAY_OF = "kstream-replay-of"
RELEASE_OF = "kstream-release-of"  # a parked message released because its blocking entry was discarded
DISCARD_TO = "kstream-discard-to"  # on a workflow step's trash entry: the inbox told when it is discarded
TRACEPARENT = "traceparent"
# Only on messages in a node's retry topic:
DUE = "kstream-due"                    # epoch ms before which the retry must not run
ATTEMPTS = "kstream-attempts"          # JSON [[epoch ms, error], ...] of the failed tries so far
RETRY_SOURCE = "kstream-retry-source"  # topic/partition/offset of the original input
_RETRY = frozenset({ATTEMPT, DUE, ATTEMPTS, RETRY_SOURCE})
# Set per message by the writer, never copied from an input to its outputs.
_NOT_INHERITED = frozenset({ID, WORKFLOW, PARENT, HOPS, ATTEMPT, ORIGIN, REPLAY_OF, RELEASE_OF, DUE, ATTEMPTS, RETRY_SOURCE,
                            DISCARD_TO})


class IdGenerator:
    """Unique message ids without a syscall per message: a random process prefix and a counter."""

    __slots__ = ("_bprefix", "_count", "_prefix")

    def __init__(self) -> None:
        self._prefix = secrets.token_hex(8) + "-"
        self._bprefix = self._prefix.encode()
        self._count = itertools.count(1)

    def __call__(self) -> str:
        return self._prefix + format(next(self._count), "x")

    def header(self) -> tuple[str, bytes]:
        """A ``kstream-id`` header with a fresh id, built without a str round trip."""
        return (ID, b"%s%x" % (self._bprefix, next(self._count)))


@dataclass(slots=True)
class Envelope:
    """What an input message tells about its lineage."""

    message_id: str
    workflow: str | None
    hops: int
    attempt: int
    carried: HeaderList
    """Headers passed on unchanged to outputs (``traceparent`` and any foreign ones)."""
    attempts: bytes | None = None
    """Raw ``kstream-attempts`` of a retried message; parsed only when it fails again."""
    replay_of: bytes | None = None
    """The Trash entry id of a replayed message (``kstream-replay-of``)."""

    def history(self) -> list[Attempt]:
        """The failed tries before this one (carried through the retry topic)."""
        if not self.attempts:
            return []
        return [Attempt(datetime.fromtimestamp(ms / 1000, UTC), error) for ms, error in json.loads(self.attempts)]

    def outgoing(self, origin: tuple[str, bytes]) -> HeaderList:
        """Headers of an output of this message, except ``kstream-id`` (one per output).

        ``origin`` is the writer's ready-made :func:`origin_header`.
        """
        hops = self.hops + 1
        return [
            (WORKFLOW, (self.workflow or self.message_id).encode()),
            (PARENT, self.message_id.encode()),
            _HOPS[hops] if hops < len(_HOPS) else (HOPS, str(hops).encode()),
            _FIRST_ATTEMPT,
            origin,
            *self.carried,
        ]


def origin_header(topology: str, node: str) -> tuple[str, bytes]:
    return (ORIGIN, f"{topology}/{node}".encode())


def entry_headers(origin: tuple[str, bytes]) -> HeaderList:
    """The constant part of the headers of an output of an entry message (hop 1)."""
    return [_HOPS[1], _FIRST_ATTEMPT, origin]


_HOPS = [(HOPS, str(i).encode()) for i in range(128)]
_FIRST_ATTEMPT = (ATTEMPT, b"1")


def read(headers: HeaderList | None, topic: str, partition: int, offset: int) -> Envelope:
    """Parse an input's headers; raises ``ValueError`` on a kstream header that makes no sense."""
    message_id = workflow = None
    attempts: bytes | None = None
    replay_of: bytes | None = None
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
            elif name == ATTEMPTS:
                attempts = value
            elif name == REPLAY_OF:
                replay_of = value
        if hops < 0 or attempt < 1:
            raise BadHeader(f"header {HOPS}={hops} / {ATTEMPT}={attempt} out of range")
    return Envelope(message_id or f"{topic}/{partition}/{offset}", workflow, hops, attempt, carried, attempts, replay_of)


def lineage(headers: HeaderList, origin: tuple[str, bytes], hop_limit: int) -> HeaderList | None:
    """The headers of an output of a message with ``headers``, less ``kstream-id``, straight from
    the bytes: :func:`read` then :meth:`Envelope.outgoing` without decoding anything (the fast path).

    None when the message needs the general path: it lacks its id or workflow, is a retry, a
    replay or a release, has a header without a value or out of range, or is at the hop limit.
    """
    message_id = workflow = None
    hops = 0
    carried: HeaderList = []
    for name, value in headers:
        if name not in _NOT_INHERITED:
            carried.append((name, value))
        elif value is None:
            return None
        elif name == ID:
            message_id = value
        elif name == WORKFLOW:
            workflow = value
        elif name == HOPS:
            if not value.isdigit():
                return None
            hops = int(value)
        elif name == ATTEMPT:
            if value != b"1":
                return None
        elif name not in (PARENT, ORIGIN):
            return None
    # Ids are ASCII: anything else is a header that makes no sense, for read() to refuse.
    if message_id is None or workflow is None or hops >= hop_limit or not (message_id.isascii() and workflow.isascii()):
        return None
    hops += 1
    return [(WORKFLOW, workflow), (PARENT, message_id), _HOPS[hops] if hops < len(_HOPS) else (HOPS, str(hops).encode()),
            _FIRST_ATTEMPT, origin, *carried]


def for_retry(msg: Record, *, attempt: int, due_ms: int, history: list[Attempt]) -> HeaderList:
    """Headers of ``msg`` re-sent to its node's retry topic: the original ones plus when and how often."""
    headers = msg.headers() or []
    source = get(headers, RETRY_SOURCE) or f"{msg.topic()}/{msg.partition()}/{msg.offset()}".encode()
    kept = [(k, v) for k, v in headers if k not in _RETRY]
    record = [[int(a.time.timestamp() * 1000), a.error] for a in history]
    return [*kept, (ATTEMPT, str(attempt).encode()), (DUE, str(due_ms).encode()),
            (ATTEMPTS, json.dumps(record).encode()), (RETRY_SOURCE, source)]


def due_ms(headers: HeaderList | None) -> int:
    """When a retry may run (epoch ms); 0 for a message that is not a retry."""
    value = get(headers, DUE)
    return int(value) if value else 0


def retry_source(headers: HeaderList | None) -> tuple[str, int, int] | None:
    """The original input position of a retried message."""
    value = get(headers, RETRY_SOURCE)
    if value is None:
        return None
    topic, partition, offset = value.decode().rsplit("/", 2)
    return topic, int(partition), int(offset)


def strip_retry(headers: HeaderList) -> HeaderList:
    return [(k, v) for k, v in headers if k not in _RETRY]


def get_str(headers: HeaderList | None, name: str) -> str | None:
    value = get(headers, name)
    return value.decode(errors="replace") if value is not None else None


def get(headers: HeaderList | None, name: str) -> bytes | None:
    """The last value of header ``name``."""
    found = None
    for k, v in headers or ():
        if k == name:
            found = v
    return found
