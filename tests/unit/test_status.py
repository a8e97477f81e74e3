"""Worker status records (kstream.runtime.status): throttling, tombstones, who counts as live."""

from __future__ import annotations

from typing import Any

from kstream.codecs import from_json
from kstream.runtime.status import StatusReporter, in_flight_by_node


class _Producer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes | None]] = []

    def produce(self, topic: str, value: bytes | None, key: bytes | None, headers: Any) -> None:
        self.sent.append((topic, value, key))


class _Rec:
    def __init__(self, key: bytes | None, value: bytes | None) -> None:
        self._key, self._value = key, value

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def partition(self) -> int:
        return 0

    def timestamp(self) -> tuple[int, int]:
        return (1, 0)


def test_reporter_publishes_at_most_every_interval_then_a_tombstone() -> None:
    now = [100.0]
    producer = _Producer()
    reporter = StatusReporter(producer, "ns.status", "t", "n", every=2.0, clock=lambda: now[0], wall=lambda: 5.0)
    reporter.publish("running", 3, 7)
    reporter.publish("running", 4, 8)  # within 2 s: skipped
    now[0] += 2.0
    reporter.publish("running", 1, 9)
    reporter.stop()
    reporter.publish("running", 0, 9)  # after the tombstone: nothing
    assert [v is None for _, v, _ in producer.sent] == [False, False, True]
    assert {k for _, _, k in producer.sent} == {reporter.key.encode()} and reporter.key.startswith("worker/t/n/")
    assert from_json(producer.sent[0][1] or b"") == {"in_flight": 3, "processed": 7, "time": 5000, "state": "running"}
    assert reporter.owns("delivery to ns.status failed: x") and not reporter.owns("delivery to ns.out failed: x")


def test_in_flight_sums_live_workers_per_node_and_skips_old_tombstoned_and_foreign_keys() -> None:
    def rec(key: str, in_flight: int | None, time: int = 10_000) -> _Rec:
        value = None if in_flight is None else f'{{"in_flight":{in_flight},"processed":0,"time":{time},"state":"running"}}'
        return _Rec(key.encode(), None if value is None else value.encode())

    records = [
        rec("worker/t/a/1", 5), rec("worker/t/a/2", 3), rec("worker/t/a/2", 4),  # the last of a key wins
        rec("worker/t/b/1", 9, time=1), rec("worker/t/c/1", 2), rec("worker/t/c/1", None),  # too old; tombstoned
        rec("worker/other/a/1", 7), rec("workflow/t/x", 1), _Rec(b"worker/t/a/3", b"not json"),
    ]
    assert in_flight_by_node(records, "t", now_ms=15_000, live_for=10.0) == {"a": 9}  # type: ignore[arg-type]
