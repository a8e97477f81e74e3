"""The Trash as a store: read, select, edit, replay and discard entries (design.md s.5).

The Trash is a compacted topic keyed by entry id; its current state is the latest value per key,
a tombstone meaning "resolved". Every write here goes through one transactional producer with a
stable ``transactional.id``, and every read is ``read_committed``. That gives replay its
exactly-once promise: the replayed message and the entry's tombstone are committed together, and
a new run first fences the previous one (aborting its open transaction) and then reads only what
committed runs left behind. A bulk replay killed halfway and started again therefore delivers
each entry exactly once.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from kstream.errors import ConfigError, DecodeError, NotFound
from kstream.headers import DISCARD_TO, RELEASE_OF, REPLAY_OF
from kstream.kafka.port import ReadProgress, TopicReader, TransactionalProducer, latest_by_key
from kstream.naming import node_topic, replay_topic
from kstream.trash import TrashCodec, TrashEntry, may_contain

log = logging.getLogger("kstream.trash")

Progress = Callable[[int, int], None]
"""Called after each committed batch with (done, total)."""

_RELATIVE = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_time(text: str, *, now: datetime | None = None) -> datetime:
    """An ISO timestamp (naive = UTC) or a time ago: ``30s``, ``10m``, ``2h``, ``1d``, ``1w``."""
    match = _RELATIVE.match(text)
    if match:
        amount, unit = int(match.group(1)), match.group(2)
        return (now or datetime.now(UTC)) - timedelta(**{_UNITS[unit]: amount})
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ConfigError(f"{text!r} is neither an ISO timestamp nor a relative time like 10m, 2h, 1d") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


@dataclass(frozen=True)
class TrashFilter:
    """Which entries: every given criterion must match (none given = all)."""

    topology: str | None = None
    node: str | None = None
    error: str | None = None
    """Case-insensitive text searched in the error type, message and reason."""
    since: datetime | None = None
    until: datetime | None = None
    """Bounds on the last failure time (inclusive)."""

    @property
    def empty(self) -> bool:
        return not (self.topology or self.node or self.error or self.since or self.until)

    def matches(self, entry: TrashEntry) -> bool:
        if self.topology is not None and entry.topology != self.topology:
            return False
        if self.node is not None and entry.node != self.node:
            return False
        if self.error is not None:
            needle = self.error.lower()
            haystack = f"{entry.error_type}\n{entry.error_message}\n{entry.reason}".lower()
            if needle not in haystack:
                return False
        if self.since is not None and entry.last_failure < self.since:
            return False
        return not (self.until is not None and entry.last_failure > self.until)


@dataclass(frozen=True)
class Selection:
    """Entries named by id, or those matching a filter."""

    ids: tuple[str, ...] = ()
    filter: TrashFilter | None = None


def summary(entries: Iterable[TrashEntry]) -> list[tuple[str, str, str, int]]:
    """(topology, node, error type, count), largest groups first."""
    counts = Counter((e.topology, e.node, e.error_type) for e in entries)
    return [(t, n, err, c) for (t, n, err), c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]


def replay_headers(entry: TrashEntry) -> list[tuple[str, bytes | None]]:
    """The original headers with ``kstream-replay-of`` set to the entry id (replacing any earlier one)."""
    return [*((k, v) for k, v in entry.headers if k not in (REPLAY_OF, RELEASE_OF)), (REPLAY_OF, entry.id.encode())]


def replay_target(entry: TrashEntry, namespace: str) -> str:
    """Where a replay of ``entry`` goes: the input topic where it failed when kstream owns it
    (``{ns}.{topology}.{node}``); otherwise (a ``source=`` node, whose topic other services
    read too) the node's replay topic, which only the node's group reads."""
    own = node_topic(namespace, entry.topology, entry.node)
    return own if entry.topic == own else replay_topic(namespace, entry.topology, entry.node)


Existing = Callable[[Sequence[str]], Iterable[str]]
"""Which of the given topics exist (checked before a replay writes to them)."""


class TrashStore:
    """Reads and changes the Trash topic.

    ``transactional`` builds the producer lazily: read-only uses (``list``, ``show``, dry runs)
    never fence a running tool. ``namespace`` places replays (:func:`replay_target`);
    ``existing``, when given, is asked before a replay or release whether its target topics
    exist, so a missing replay topic is one clear error instead of a transaction that times out.
    Not thread-safe; one store per command.
    """

    def __init__(
        self,
        topic: str,
        reader: TopicReader,
        transactional: Callable[[], TransactionalProducer],
        *,
        namespace: str,
        existing: Existing | None = None,
        batch_size: int = 500,
        timeout: float = 60.0,
    ) -> None:
        """``timeout``: the deadline of each read of the Trash topic and of each transaction."""
        if batch_size < 1:
            raise ConfigError(f"batch size must be at least 1, not {batch_size}")
        self.topic = topic
        self.namespace = namespace
        self._existing = existing
        self._reader = reader
        self._make_producer = transactional
        self._producer: TransactionalProducer | None = None
        self._codec = TrashCodec()
        self._batch_size = batch_size
        self._timeout = timeout

    # -- reading ---------------------------------------------------------------------------

    def entries(self, flt: TrashFilter | None = None, progress: ReadProgress | None = None) -> list[TrashEntry]:
        """The unresolved entries (latest value per id, tombstones dropped), oldest failure first.

        Only records that can match ``flt`` are decoded (:func:`kstream.trash.may_contain`): a
        listing of one node of a large Trash costs one read of the topic, not a decode per entry."""
        return self._entries(self._latest(progress), flt)

    def _entries(self, latest: dict[bytes, bytes], flt: TrashFilter | None) -> list[TrashEntry]:
        out = []
        for key, value in latest.items():
            if flt is not None and not may_contain(value, flt.topology, flt.node):
                continue
            entry = self._decode(key, value)
            if entry is not None and (flt is None or flt.matches(entry)):
                out.append(entry)
        out.sort(key=lambda e: (e.last_failure, e.id))
        return out

    def get(self, entry_id: str, progress: ReadProgress | None = None) -> TrashEntry:
        """One entry; the topic is read once and only that entry decoded."""
        return self.select(Selection(ids=(entry_id,)), progress)[0]

    def _latest(self, progress: ReadProgress | None) -> dict[bytes, bytes]:
        """Key -> latest value of every unresolved entry, undecoded."""
        latest = latest_by_key(self._reader.read_compacted(self.topic, self._timeout, progress))
        return {key: value for key, rec in latest.items() if (value := rec.value()) is not None}

    def _decode(self, key: bytes, value: bytes) -> TrashEntry | None:
        try:
            return self._codec.decode(value)
        except (DecodeError, ValueError, EOFError, KeyError) as exc:
            log.warning("skipping trash record %r that does not decode: %s", key, exc)
            return None

    def select(self, selection: Selection, progress: ReadProgress | None = None) -> list[TrashEntry]:
        """The selected entries; raises :class:`NotFound` naming every unknown id."""
        return self._select(self._latest(progress), selection)

    def _select(self, latest: dict[bytes, bytes], selection: Selection) -> list[TrashEntry]:
        if not selection.ids:
            return self._entries(latest, selection.filter)
        found = {i: e for i in dict.fromkeys(selection.ids)
                 if (value := latest.get(i.encode())) is not None and (e := self._decode(i.encode(), value)) is not None}
        missing = [i for i in selection.ids if i not in found]
        if missing:
            raise NotFound(f"no trash entry {', '.join(missing)}")
        return list(found.values())

    # -- writing ---------------------------------------------------------------------------

    def _txn(self) -> TransactionalProducer:
        if self._producer is None:
            producer = self._make_producer()
            # Fences an earlier run and aborts its open transaction before anything is read.
            producer.init(self._timeout)
            self._producer = producer
        return self._producer

    def edit(self, entry_id: str, value: bytes) -> TrashEntry:
        """Replace the entry's payload (validation is the caller's: it knows the node)."""
        producer = self._txn()
        edited = replace(self.get(entry_id), value=value, edited=True)
        producer.begin()
        producer.produce(self.topic, self._codec.encode(edited), edited.id.encode(), None)
        producer.commit(self._timeout)
        return edited

    def target(self, entry: TrashEntry) -> str:
        """The topic a replay of ``entry`` is written to (:func:`replay_target`)."""
        return replay_target(entry, self.namespace)

    def replay(self, selection: Selection, *, dry_run: bool = False, progress: Progress | None = None,
               reading: ReadProgress | None = None) -> list[TrashEntry]:
        """Produce each selected entry to the input of the node where it failed
        (:func:`replay_target`) and tombstone it, both in one transaction per batch. Messages
        parked behind a replayed entry (a node with ``on_failure="park_key"``) follow it, in
        their original order. Returns the entries (to be) replayed. ``reading`` follows the read
        of the Trash topic."""

        def write(producer: TransactionalProducer, entry: TrashEntry, released_by: str | None) -> None:
            producer.produce(self.target(entry), entry.value, entry.key, replay_headers(entry))
            producer.produce(self.topic, None, entry.id.encode(), None)

        return self._apply(selection, write, dry_run=dry_run, progress=progress, reading=reading,
                           writes_to=lambda _: True)

    def discard(self, selection: Selection, *, dry_run: bool = False, progress: Progress | None = None,
                reading: ReadProgress | None = None) -> list[TrashEntry]:
        """Tombstone the selected entries. Messages parked behind a discarded entry are
        released: replayed in their original order, marked ``kstream-release-of`` so the node
        lets their key flow again. Returns the entries (to be) discarded or released."""

        def write(producer: TransactionalProducer, entry: TrashEntry, released_by: str | None) -> None:
            if released_by is not None:
                headers = [*replay_headers(entry), (RELEASE_OF, released_by.encode())]
                producer.produce(self.target(entry), entry.value, entry.key, headers)
            inbox = next((v for k, v in entry.headers if k == DISCARD_TO and v), None)
            if inbox is not None and entry.value is not None:  # a workflow step: its orchestrator moves on
                producer.produce(inbox.decode(), b'{"type":"discarded","command":' + entry.value + b"}", entry.key, None)
            producer.produce(self.topic, None, entry.id.encode(), None)

        return self._apply(selection, write, dry_run=dry_run, progress=progress, reading=reading,
                           writes_to=lambda released_by: released_by is not None)

    def _with_parked(self, latest: dict[bytes, bytes], entries: list[TrashEntry]) -> list[tuple[TrashEntry, str | None]]:
        """Each entry followed by the entries parked behind it (original order), with the id of
        the entry that releases them. Parked entries belong to their blocking entry's node, so
        only entries of the nodes in ``entries`` are decoded."""
        behind: dict[str, list[TrashEntry]] = {}
        for topology, node in sorted({(e.topology, e.node) for e in entries}):
            for e in self._entries(latest, TrashFilter(topology=topology, node=node)):
                if e.parked_behind is not None:
                    behind.setdefault(e.parked_behind, []).append(e)
        chosen = {e.id for e in entries}
        out: list[tuple[TrashEntry, str | None]] = []
        for e in entries:
            if e.parked_behind is not None and e.parked_behind in chosen:
                continue  # goes right after its blocking entry
            out.append((e, None))
            for parked in sorted(behind.get(e.id, []), key=lambda p: (p.partition, p.offset)):
                out.append((parked, e.id))
        return out

    def _apply(
        self,
        selection: Selection,
        write: Callable[[TransactionalProducer, TrashEntry, str | None], None],
        *,
        dry_run: bool,
        progress: Progress | None,
        reading: ReadProgress | None,
        writes_to: Callable[[str | None], bool],
    ) -> list[TrashEntry]:
        """``writes_to(released_by)``: whether ``write`` produces the entry to its target topic."""
        if dry_run:
            latest = self._latest(reading)
            return [e for e, _ in self._with_parked(latest, self._select(latest, selection))]
        producer = self._txn()  # before reading: see the module docstring
        latest = self._latest(reading)
        steps = self._with_parked(latest, self._select(latest, selection))
        self._check_targets({self.target(e) for e, released_by in steps if writes_to(released_by)})
        entries = [e for e, _ in steps]
        total = len(steps)
        for start in range(0, total, self._batch_size):
            batch = steps[start:start + self._batch_size]
            producer.begin()
            try:
                for entry, released_by in batch:
                    write(producer, entry, released_by)
            except BaseException:
                producer.abort(self._timeout)
                raise
            producer.commit(self._timeout)
            if progress is not None:
                progress(start + len(batch), total)
        return entries

    def _check_targets(self, topics: set[str]) -> None:
        if self._existing is None or not topics:
            return
        missing = sorted(topics - set(self._existing(sorted(topics))))
        if missing:
            raise NotFound(f"replay target topic {', '.join(missing)} does not exist: "
                           "`kstream topics apply APP` creates it (nothing was replayed)")

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close()
            self._producer = None
