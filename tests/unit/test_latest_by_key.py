"""The latest record per key of a compacted topic, also when a key's records sit on two
partitions (written before and after kstream changed to the Java client's partitioner)."""

from __future__ import annotations

from dataclasses import dataclass

from kstream.kafka.port import latest_by_key
from kstream.types import HeaderList


@dataclass
class Rec:
    _key: bytes | None
    _value: bytes | None
    _partition: int
    _ts: int

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def partition(self) -> int:
        return self._partition

    def timestamp(self) -> tuple[int, int]:
        return (1, self._ts)

    def headers(self) -> HeaderList | None:
        return None


def _latest(*records: Rec) -> dict[bytes, bytes | None]:
    return {k: r.value() for k, r in latest_by_key(records).items()}  # type: ignore[arg-type]


def test_within_a_partition_the_later_offset_wins_whatever_the_timestamps() -> None:
    assert _latest(Rec(b"k", b"old", 0, 200), Rec(b"k", b"new", 0, 100), Rec(None, b"x", 0, 300)) == {b"k": b"new"}


def test_across_partitions_the_newest_record_wins_in_either_reading_order() -> None:
    # Given an entry written with crc32 (partition 4) and its tombstone written with murmur2 (1)
    entry, tombstone = Rec(b"e", b"entry", 4, 1000), Rec(b"e", None, 1, 2000)
    # Then the tombstone wins whichever partition is read first
    assert _latest(entry, tombstone) == {b"e": None}
    assert _latest(tombstone, entry) == {b"e": None}
    # And a cursor updated after the change wins over the one before it, also on an earlier partition
    assert _latest(Rec(b"c", b"v2", 0, 50), Rec(b"c", b"v1", 3, 10), Rec(b"c", b"v0", 3, 5)) == {b"c": b"v2"}
