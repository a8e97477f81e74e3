"""Payload codecs: bytes on the wire, Python values in handlers.

A node's input codec is chosen once, from the annotation of its handler's first parameter:

==========================  ==============================================================
annotation                  decoding
==========================  ==============================================================
pydantic model              ``Model.model_validate_json`` (validation errors are permanent)
``dict``/``list``/``Any``   JSON via orjson (no annotation means the same)
``bytes``                   the raw value, untouched
``str``                     UTF-8 text
==========================  ==============================================================

Outputs are encoded by their runtime type, so a node can return any of these and the next node
decodes by its own annotation. JSON stays plain JSON text on the wire: kcat, Kafka Connect and
Java services read and write kstream topics without knowing kstream.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fastavro
import orjson
from pydantic import BaseModel, ValidationError

from kstream.errors import DecodeError

Decoder = Callable[[bytes | None], Any]


def _decode_json(data: bytes | None) -> Any:
    if data is None:
        raise DecodeError("message has no value (null payload)", reason="decode")
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise DecodeError(f"payload is not valid JSON: {exc}", reason="decode") from None


def _decode_bytes(data: bytes | None) -> Any:
    return data


def _decode_str(data: bytes | None) -> Any:
    if data is None:
        raise DecodeError("message has no value (null payload)", reason="decode")
    try:
        return data.decode()
    except UnicodeDecodeError as exc:
        raise DecodeError(f"payload is not UTF-8 text: {exc}", reason="decode") from None


def _model_decoder(model: type[BaseModel]) -> Decoder:
    validate = model.model_validate_json

    def decode(data: bytes | None) -> Any:
        if data is None:
            raise DecodeError("message has no value (null payload)", reason="decode")
        try:
            return validate(data)
        except ValidationError as exc:
            reason = "decode" if any(e["type"] == "json_invalid" for e in exc.errors()) else "validation"
            raise DecodeError(validation_message(exc, model), reason=reason) from None

    return decode


def validation_message(exc: ValidationError, model: type[BaseModel]) -> str:
    """A validation error of ``model`` as one line (the first three problems)."""
    parts = []
    for err in exc.errors()[:3]:
        loc = ".".join(str(p) for p in err["loc"]) or "payload"
        parts.append(f"{loc}: {err['msg']}")
    more = f" (+{exc.error_count() - 3} more)" if exc.error_count() > 3 else ""
    return f"invalid {model.__name__}: " + "; ".join(parts) + more


def decoder_for(annotation: Any) -> Decoder:
    """The decoder for a handler's payload annotation (``inspect.Parameter.empty`` = JSON)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return _model_decoder(annotation)
    if annotation is bytes:
        return _decode_bytes
    if annotation is str:
        return _decode_str
    return _decode_json


def encode(value: object) -> bytes:
    """Encode one output value by its type: bytes as is, str as UTF-8, models and the rest as JSON."""
    if type(value) is bytes:
        return value
    if isinstance(value, BaseModel):
        return value.model_dump_json().encode()
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)


def encode_key(key: object) -> bytes | None:
    """Keys: bytes as is, str as UTF-8, ``None`` stays ``None``, anything else as its ``str``."""
    if key is None or type(key) is bytes:
        return key
    if isinstance(key, str):
        return key.encode()
    return str(key).encode()


def to_json(value: object) -> str:
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()


def from_json(text: str | bytes) -> Any:
    return orjson.loads(text)


def pretty_json(data: bytes | None) -> str:
    """Human-readable form of a payload: indented JSON if it is JSON, else text or a repr."""
    if data is None:
        return "(null)"
    try:
        return orjson.dumps(orjson.loads(data), option=orjson.OPT_INDENT_2).decode()
    except orjson.JSONDecodeError:
        try:
            return data.decode()
        except UnicodeDecodeError:
            return repr(data)


class AvroCodec:
    """Schemaless Avro for framework records, with the schema parsed once (never per record)."""

    def __init__(self, schema_path: Path) -> None:
        self.schema = fastavro.parse_schema(json.loads(schema_path.read_text()))

    def encode(self, record: dict[str, Any]) -> bytes:
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, self.schema, record)
        return buf.getvalue()

    def decode(self, data: bytes) -> dict[str, Any]:
        buf = io.BytesIO(data)
        try:
            result = fastavro.schemaless_reader(buf, self.schema, None)
        except (EOFError, ValueError, IndexError, TypeError, OverflowError) as exc:
            raise DecodeError(f"framework record is not valid Avro: {exc!r}", reason="decode") from None
        if buf.tell() != len(data):
            raise DecodeError("framework record is not valid Avro: trailing bytes", reason="decode")
        if not isinstance(result, dict):
            raise DecodeError("framework record is not an Avro record", reason="decode")
        return result

