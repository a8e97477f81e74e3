"""KafkaConsumer.consume on a batch that mixes records and an error event (no broker: a stand-in client)."""

from __future__ import annotations

from typing import Any

import confluent_kafka as ck
import pytest

from kstream.errors import AccessDenied
from kstream.kafka.confluent import KafkaConsumer, _LoginWatch


class _Client:
    def __init__(self, batch: list[Any]) -> None:
        self.batch = batch

    def consume(self, n: int, timeout: float) -> list[Any]:
        batch, self.batch = self.batch, []
        return batch


def _consumer(batch: list[Any]) -> KafkaConsumer:
    c = KafkaConsumer.__new__(KafkaConsumer)
    c._consumer, c._watch, c._principal, c._topics, c._group = _Client(batch), _LoginWatch(), "User:app", ["in"], "g"
    return c


def test_a_denied_topic_in_a_batch_with_records_raises_the_one_line_error_not_an_attribute_error() -> None:
    record = ck.Message(topic="in", partition=0, offset=1, value=b"{}")
    denied = ck.Message(topic="in.retry", error=ck.KafkaError(ck.KafkaError.TOPIC_AUTHORIZATION_FAILED))
    with pytest.raises(AccessDenied, match=r"may not READ TOPIC in\.retry"):
        _consumer([record, denied]).consume(10, 0)


def test_a_transient_error_event_is_dropped_and_the_records_of_its_batch_kept() -> None:
    record = ck.Message(topic="in", partition=0, offset=1, value=b"{}")
    transient = ck.Message(error=ck.KafkaError(ck.KafkaError._TRANSPORT))
    assert _consumer([record, transient]).consume(10, 0) == [record]
