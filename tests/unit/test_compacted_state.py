"""Compacted-topic state at scale (issue 9, item 9): read once and follow; decode only what is asked."""

from __future__ import annotations

import io
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from kstream.batch import CursorCodec, CursorState, CursorView, read_cursors
from kstream.cli.progress import ProgressLine
from kstream.kafka.port import NewTopic, ReadProgress, TopicFollower
from kstream.testing.memory import MemoryAdmin, MemoryBroker, MemoryProducer, MemoryTopicReader, MemoryTransactionalProducer
from kstream.trash import Attempt, TrashCodec, TrashEntry, blocking_keys, entry_id
from kstream.trash_store import TrashFilter, TrashStore
from kstream.types import Record


class CountingFollower:
    """A follower that counts the records each read returned."""

    def __init__(self, inner: TopicFollower) -> None:
        self.inner = inner
        self.reads: list[int] = []

    def read_new(self, timeout: float, progress: ReadProgress | None = None) -> list[Record]:
        got = self.inner.read_new(timeout, progress)
        self.reads.append(len(got))
        return got

    def close(self) -> None:
        self.inner.close()


def _broker(*topics: str) -> tuple[MemoryBroker, MemoryProducer]:
    broker = MemoryBroker()
    MemoryAdmin(broker).create_topics([NewTopic(t, 3, 1, {"cleanup.policy": "compact"}) for t in topics])
    return broker, MemoryProducer(broker)


def _cursor(producer: MemoryProducer, scope: str, last: int, node: str = "fetch") -> None:
    state = CursorState("shop", node, scope, last_run="r", last_cursor=last, completed=datetime.now(UTC))
    producer.produce("cursors", CursorCodec().encode(state), state.key.encode(), None)


def test_a_cursor_view_reads_the_topic_once_then_only_what_was_added() -> None:
    # Given 1,000 scopes of the node and 500 of another node on the cursors topic
    broker, producer = _broker("cursors")
    for i in range(1000):
        _cursor(producer, f"s{i}", i)
    for i in range(500):
        _cursor(producer, f"s{i}", -i, node="other")
    follower = CountingFollower(MemoryTopicReader(broker).follow("cursors"))
    view = CursorView(follower, topology="shop", node="fetch")
    # When scopes are looked up
    state, reset = view.lookup("s7")
    assert state is not None and state.last_cursor == 7 and reset is None
    assert view.lookup("s999")[0].last_cursor == 999  # type: ignore[union-attr]
    assert view.lookup("nope") == (None, None)
    # Then the topic was read once; later lookups read nothing more
    assert follower.reads == [1500, 0, 0]
    # When a scope is updated and another reset (a tombstone), the next lookup sees both, reading only those
    _cursor(producer, "s7", 70)
    producer.produce("cursors", None, b"shop/fetch/s8", None)
    assert view.lookup("s7")[0].last_cursor == 70  # type: ignore[union-attr]
    state, reset = view.lookup("s8")
    assert state is None and reset is not None and abs(reset - datetime.now(UTC)) < timedelta(minutes=1)
    assert follower.reads[3:] == [2, 0]
    view.close()


def test_read_cursors_of_one_node_decodes_only_its_records(monkeypatch: pytest.MonkeyPatch) -> None:
    broker, producer = _broker("cursors")
    for i in range(50):
        _cursor(producer, f"s{i}", i)
        _cursor(producer, f"s{i}", i, node="other")
    decoded = _count_calls(monkeypatch, CursorCodec, "decode")
    states = read_cursors(MemoryTopicReader(broker), "cursors", topology="shop", node="fetch")
    assert sorted(s.last_cursor for s in states) == list(range(50))
    assert decoded() == 50


def _count_calls(monkeypatch: pytest.MonkeyPatch, cls: type, name: str) -> Callable[[], int]:
    calls = [0]
    original = getattr(cls, name)

    def counted(self: Any, *args: Any) -> Any:
        calls[0] += 1
        return original(self, *args)

    monkeypatch.setattr(cls, name, counted)
    return lambda: calls[0]


def _entry(i: int, node: str, *, parked_behind: str | None = None) -> TrashEntry:
    when = datetime.now(UTC) - timedelta(seconds=1000 - i)
    return TrashEntry(id=entry_id("big", node, "src", 0, i), topology="big", node=node, reason="error",
                      error_type="ValueError", error_message=f"bad {i}", traceback="", key=f"k{i % 7}".encode(),
                      value=b"{}", headers=[], topic="src", partition=0, offset=i, workflow=None,
                      attempts=(Attempt(when, "ValueError"),), first_failure=when, last_failure=when,
                      parked_behind=parked_behind)


def test_trash_reads_decode_only_entries_that_can_match(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given 300 entries over 3 nodes
    broker, producer = _broker("trash")
    entries = [_entry(i, f"node{i % 3}") for i in range(300)]
    codec = TrashCodec()
    for e in entries:
        producer.produce("trash", codec.encode(e), e.id.encode(), None)
    store = TrashStore("trash", MemoryTopicReader(broker), lambda: MemoryTransactionalProducer(broker, "t"),
                       namespace="ns")
    decoded = _count_calls(monkeypatch, TrashCodec, "decode")
    # When one node's entries are listed: only a third is decoded
    listed = store.entries(TrashFilter(node="node1"))
    assert [e.id for e in listed] == [e.id for e in entries if e.node == "node1"]
    assert decoded() == 100
    # When one entry is shown: one decode
    assert store.get(entries[150].id) == entries[150]
    assert decoded() == 101
    # And the parked keys of a node come from its entries only
    assert blocking_keys(MemoryTopicReader(broker), "trash", topology="big", node="node2") == {
        f"k{k}".encode(): next(e.id for e in reversed(entries) if e.node == "node2" and e.key == f"k{k}".encode())
        for k in range(7)}
    assert decoded() == 201


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_shows_at_once_on_a_terminal_and_elsewhere_only_after_two_seconds() -> None:
    clock, log = Clock(), io.StringIO()
    quiet = ProgressLine("reading t", stream=log, clock=clock)
    quiet(500, 1000)
    clock.now = 1.9
    quiet(1000, 1000)
    assert log.getvalue() == "", "a read under 2 s says nothing in a log"
    slow = ProgressLine("reading t", stream=log, clock=clock)
    clock.now = 4.0
    slow(10_000, 100_000)
    clock.now = 4.5
    slow(20_000, 100_000)  # within the interval: not repeated
    clock.now = 6.5
    slow(100_000, 100_000)
    slow.close()
    assert log.getvalue().splitlines() == ["reading t: 10,000/100,000 records (10%)",
                                           "reading t: 100,000/100,000 records (100%)"]
    term = Tty()
    line = ProgressLine("reading t", stream=term, clock=clock)
    line(1, 4)
    line(4, 4)
    line.close()
    assert term.getvalue() == "\rreading t: 1/4 records (25%)\x1b[K\rreading t: 4/4 records (100%)\x1b[K\n"
