"""Hanging-transaction bookkeeping and the parsing of Kafka's TransactionsCommand output."""

from __future__ import annotations

from kstream.kafka.port import PartitionEnds
from kstream.txns import HangingWatch, OpenTransaction, _java_admin_properties, _rows, remedy, still_pinning


def test_a_stable_offset_stuck_below_the_high_watermark_hangs_only_after_the_threshold() -> None:
    watch = HangingWatch(after=60)
    assert watch.observe([PartitionEnds("t", 0, 5, 9)], now=0) == ([], [])
    assert watch.observe([PartitionEnds("t", 0, 5, 12)], now=59) == ([], [])
    new, gone = watch.observe([PartitionEnds("t", 0, 5, 15)], now=60)
    assert [(h.topic, h.partition, h.offset, h.since) for h in new] == [("t", 0, 5, 0)] and gone == []
    assert "kstream txns abort --topic t --partition 0 --start-offset 5" in new[0].line(61)
    # reported once, not on every check
    assert watch.observe([PartitionEnds("t", 0, 5, 15)], now=70) == ([], [])
    # and cleared when the LSO catches up
    new, gone = watch.observe([PartitionEnds("t", 0, 15, 15)], now=80)
    assert new == [] and [h.offset for h in gone] == [5] and watch.hanging == {}


def test_a_moving_stable_offset_never_hangs() -> None:
    # Given back-to-back live transactions: the LSO is behind at every check, but never at one offset
    watch = HangingWatch(after=10)
    for i in range(100):
        new, _ = watch.observe([PartitionEnds("t", 1, i * 3, i * 3 + 2)], now=i * 5.0)
        assert new == []


def test_partitions_are_tracked_apart() -> None:
    watch = HangingWatch(after=1)
    watch.observe([PartitionEnds("a", 0, 1, 2), PartitionEnds("a", 1, 4, 4)], now=0)
    new, _ = watch.observe([PartitionEnds("a", 0, 1, 3), PartitionEnds("a", 1, 4, 6)], now=2)
    assert [(h.topic, h.partition) for h in new] == [("a", 0)]


def test_find_hanging_table_is_parsed() -> None:
    out = ("Topic\tPartition\tProducerId\tProducerEpoch\tCoordinatorEpoch\tStartOffset\tLastTimestamp\tDuration(min)\t\n"
           "orders.out\t3\t987\t0\t-1\t42\t1796017461115\t12\t\n")
    [t] = _rows(out)
    assert (t.topic, t.partition, t.producer_id, t.producer_epoch, t.start_offset) == ("orders.out", 3, 987, 0, 42)
    assert _rows("Topic\tPartition\tProducerId\n") == []


def test_a_reported_transaction_whose_partition_moved_past_it_has_ended_and_is_dropped() -> None:
    # Given find-hanging rows: a live transaction it caught committing (status[0] at 18) and a real one (out[0] at 5)
    live = OpenTransaction("app.status", 0, 161, 0, 18, 0)
    real = OpenTransaction("app.out", 0, 7, 0, 5, 0)
    behind = OpenTransaction("app.out", 1, 8, 0, 30, 0)
    # When the LSOs read afterwards show status[0] past 18, out[0] still at 5 and out[1] pinned lower (at 12)
    ends = [PartitionEnds("app.status", 0, 25, 26), PartitionEnds("app.out", 0, 5, 900), PartitionEnds("app.out", 1, 12, 40)]
    # Then only the live one is dropped: a partition pinned at or below a start offset may still hang there
    assert still_pinning([live, real, behind], ends) == [real, behind]
    assert still_pinning([real], []) == [real]  # partition not read: kept, never hidden


def test_librdkafka_security_settings_become_java_admin_properties() -> None:
    props = _java_admin_properties({"security.protocol": "SASL_SSL", "sasl.mechanisms": "SCRAM-SHA-512",
                                    "sasl.username": "ops", "sasl.password": "s3cret", "ssl.ca.location": "/ca.pem",
                                    "linger.ms": "5"})
    assert "security.protocol=SASL_SSL\n" in props and "sasl.mechanism=SCRAM-SHA-512\n" in props
    assert 'ScramLoginModule required username="ops" password="s3cret";' in props
    assert "ssl.truststore.type=PEM\nssl.truststore.location=/ca.pem\n" in props
    assert "linger" not in props
    assert remedy("t", 1, 7) == "kstream txns abort --topic t --partition 1 --start-offset 7"
