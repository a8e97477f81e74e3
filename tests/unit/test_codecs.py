"""Payload codecs (JSON, pydantic, bytes, str) and the Avro codec of trash entries."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic import BaseModel

from kstream.codecs import AvroCodec, decoder_for, encode, encode_key, pretty_json
from kstream.errors import DecodeError, Permanent
from kstream.trash import Attempt, TrashCodec, TrashEntry, entry_id, failure_entry
from tests.unit.fakes import FakeRecord


class Order(BaseModel):
    id: int
    customer: str
    amount: float = 0.0


# -- decoding --------------------------------------------------------------------------------


def test_json_decodes() -> None:
    assert decoder_for(dict)(b'{"a": [1, 2.5, null, "x"]}') == {"a": [1, 2.5, None, "x"]}


@pytest.mark.parametrize("data", [b"{not json", b"", b"\xff\xfe", b'{"a": 1} trailing'])
def test_bad_json_is_a_permanent_decode_error(data: bytes) -> None:
    with pytest.raises(DecodeError) as raised:
        decoder_for(dict)(data)
    assert raised.value.reason == "decode"
    assert isinstance(raised.value, Permanent)
    assert str(raised.value).startswith("payload is not valid JSON")


@pytest.mark.parametrize("annotation", [dict, str, Order])
def test_a_null_payload_is_a_decode_error(annotation: Any) -> None:
    with pytest.raises(DecodeError, match="null payload") as raised:
        decoder_for(annotation)(None)
    assert raised.value.reason == "decode"


def test_a_null_payload_passes_through_as_bytes() -> None:
    assert decoder_for(bytes)(None) is None


def test_a_model_validates() -> None:
    assert decoder_for(Order)(b'{"id": 7, "customer": "c1"}') == Order(id=7, customer="c1")


def test_a_model_validation_error_is_one_line_with_reason_validation() -> None:
    # Given a payload that is JSON but breaks the model in several places
    data = b'{"id": "seven", "amount": "lots"}'

    # When it is decoded
    with pytest.raises(DecodeError) as raised:
        decoder_for(Order)(data)

    # Then the error is a validation error, on one line, naming the model and the fields
    message = str(raised.value)
    assert raised.value.reason == "validation"
    assert "\n" not in message
    assert message.startswith("invalid Order: ")
    assert all(field in message for field in ("id:", "customer:", "amount:"))


def test_a_model_error_lists_three_problems_and_counts_the_rest() -> None:
    class Wide(BaseModel):
        a: int
        b: int
        c: int
        d: int
        e: int

    with pytest.raises(DecodeError, match=r"\(\+2 more\)$"):
        decoder_for(Wide)(b"{}")


def test_invalid_json_for_a_model_is_reason_decode() -> None:
    with pytest.raises(DecodeError) as raised:
        decoder_for(Order)(b"{nope")
    assert raised.value.reason == "decode"


def test_bytes_are_passed_raw_and_str_decoded_as_utf8() -> None:
    assert decoder_for(bytes)(b"\x00\xff") == b"\x00\xff"
    assert decoder_for(str)("zürich".encode()) == "zürich"


def test_str_that_is_not_utf8_is_a_decode_error() -> None:
    with pytest.raises(DecodeError, match="not UTF-8") as raised:
        decoder_for(str)(b"\xff")
    assert raised.value.reason == "decode"


# -- encoding --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "wire"),
    [
        (b"\x00raw", b"\x00raw"),
        (bytearray(b"ba"), b"ba"),
        (memoryview(b"mv"), b"mv"),
        ("text é", "text é".encode()),
        ({"a": 1, "b": [True, None]}, b'{"a":1,"b":[true,null]}'),
        ({1: "int keys"}, b'{"1":"int keys"}'),
        ([1, "two"], b'[1,"two"]'),
        ((1, 2), b"[1,2]"),
        (42, b"42"),
        (1.5, b"1.5"),
        (True, b"true"),
        (Order(id=1, customer="c"), b'{"id":1,"customer":"c","amount":0.0}'),
    ],
    ids=lambda v: type(v).__name__,
)
def test_encode_by_type(value: object, wire: bytes) -> None:
    assert encode(value) == wire


def test_encoded_json_is_plain_json_text() -> None:
    # Other Kafka clients read kstream topics: the wire format is ordinary JSON
    value = {"id": 1, "items": [{"sku": "a", "qty": 2}]}
    assert json.loads(encode(value)) == value


def test_an_unencodable_value_raises() -> None:
    with pytest.raises(TypeError):
        encode({1, 2})


@pytest.mark.parametrize(
    ("key", "wire"),
    [(None, None), (b"k\x00", b"k\x00"), ("customer-1", b"customer-1"), (42, b"42"),
     (uuid.UUID(int=1), b"00000000-0000-0000-0000-000000000001")],
    ids=repr,
)
def test_encode_key(key: object, wire: bytes | None) -> None:
    assert encode_key(key) == wire


def test_pretty_json_shows_json_text_and_binary() -> None:
    assert pretty_json(b'{"a":1}') == '{\n  "a": 1\n}'
    assert pretty_json(b"plain text") == "plain text"
    assert pretty_json(b"\xff\x00") == repr(b"\xff\x00")
    assert pretty_json(None) == "(null)"


# -- Avro ------------------------------------------------------------------------------------


def test_avro_codec_round_trips_a_record(tmp_path: Path) -> None:
    schema = {"type": "record", "name": "R", "fields": [{"name": "a", "type": "string"}, {"name": "b", "type": ["null", "long"]}]}
    (tmp_path / "r.avsc").write_text(json.dumps(schema))
    codec = AvroCodec(tmp_path / "r.avsc")
    assert codec.decode(codec.encode({"a": "x", "b": None})) == {"a": "x", "b": None}
    assert codec.decode(codec.encode({"a": "", "b": 2**40})) == {"a": "", "b": 2**40}


def test_avro_codec_refuses_a_non_record_schema(tmp_path: Path) -> None:
    (tmp_path / "s.avsc").write_text('"string"')
    codec = AvroCodec(tmp_path / "s.avsc")
    with pytest.raises(DecodeError, match="not an Avro record"):
        codec.decode(b"\x02a")


def _failed_entry() -> TrashEntry:
    # A record with a key, a JSON value and headers (one of them null), failing after 3 attempts
    record = FakeRecord(
        value_=b'{"id": 1}', key_=b"customer-1", topic_="kstream.shop.enrich", partition_=3, offset_=1234,
        headers_=[("kstream-id", b"m1"), ("kstream-workflow", b"w1"), ("x-null", None), ("x-dup", b"1"), ("x-dup", b"2")],
    )
    attempts = (
        Attempt(datetime(2024, 5, 1, 12, 0, 0, 1000, tzinfo=UTC), "RuntimeError: one"),
        Attempt(datetime(2024, 5, 1, 12, 0, 1, 2000, tzinfo=UTC), "RuntimeError: two"),
        Attempt(datetime(2024, 5, 1, 12, 0, 3, 3000, tzinfo=UTC), "RuntimeError: three"),
    )
    try:
        raise RuntimeError("three")
    except RuntimeError as exc:
        return failure_entry(record, topology="shop", node="enrich", exc=exc, workflow="w1", attempts=attempts)


def test_failure_entry_keeps_the_original_record_and_says_why() -> None:
    entry = _failed_entry()
    assert entry.id == entry_id("shop", "enrich", "kstream.shop.enrich", 3, 1234)
    assert (entry.key, entry.value, entry.topic, entry.partition, entry.offset) == (
        b"customer-1", b'{"id": 1}', "kstream.shop.enrich", 3, 1234)
    assert ("x-null", None) in entry.headers
    assert (entry.reason, entry.error_type, entry.error_message) == ("error", "RuntimeError", "three")
    assert "Traceback" in entry.traceback and "RuntimeError: three" in entry.traceback
    assert entry.first_failure == entry.attempts[0].time
    assert entry.last_failure == entry.attempts[-1].time
    assert entry.workflow == "w1"


def test_failure_entry_of_a_decode_error_has_its_reason_and_one_attempt() -> None:
    entry = failure_entry(FakeRecord(value_=b"{"), topology="t", node="n", workflow=None,
                          exc=DecodeError("payload is not valid JSON", reason="decode"))
    assert entry.reason == "decode"
    assert len(entry.attempts) == 1
    assert entry.attempts[0].error == "DecodeError: payload is not valid JSON"
    assert entry.traceback == "", "an exception never raised has no traceback"


def test_the_trash_entry_id_is_stable_per_failure_position() -> None:
    a = entry_id("t", "n", "topic", 0, 5)
    assert a == entry_id("t", "n", "topic", 0, 5)
    assert len({a, entry_id("t", "n", "topic", 0, 6), entry_id("t", "m", "topic", 0, 5)}) == 3


def test_trash_codec_round_trips_a_full_entry() -> None:
    # Given an entry with null and repeated headers and a history of attempts (whole milliseconds)
    entry = _failed_entry()
    codec = TrashCodec()

    # When it is encoded and decoded
    back = codec.decode(codec.encode(entry))

    # Then nothing is lost
    assert back == entry
    assert back.headers == entry.headers
    assert [a.error for a in back.attempts] == ["RuntimeError: one", "RuntimeError: two", "RuntimeError: three"]
    assert back.first_failure.tzinfo is not None


def test_trash_codec_round_trips_edits_and_empty_fields() -> None:
    t = datetime(2024, 1, 1, tzinfo=UTC)
    entry = TrashEntry(
        id="e1", topology="t", node="n", reason="hop limit", error_type="HopLimitExceeded", error_message="m",
        traceback="", key=None, value=None, headers=[], topic="", partition=0, offset=0, workflow=None,
        attempts=(Attempt(t, "x"),), first_failure=t, last_failure=t, edited=True, parked_behind="e0",
    )
    codec = TrashCodec()
    assert codec.decode(codec.encode(entry)) == entry


def test_trash_codec_round_trips_sub_millisecond_times() -> None:
    t = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
    entry = TrashEntry(
        id="e1", topology="t", node="n", reason="error", error_type="E", error_message="m", traceback="",
        key=None, value=None, headers=[], topic="", partition=0, offset=0, workflow=None,
        attempts=(Attempt(t, "x"),), first_failure=t, last_failure=t,
    )
    codec = TrashCodec()
    assert codec.decode(codec.encode(entry)) == entry  # today: 12:00:00.123000


@pytest.mark.parametrize("data", [b"", orjson.dumps({"id": "not avro"})], ids=["empty", "json"])
def test_trash_codec_refuses_foreign_bytes_with_a_decode_error(data: bytes) -> None:
    with pytest.raises(DecodeError):
        TrashCodec().decode(data)
