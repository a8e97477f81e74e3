"""The schema registry adapter: Confluent's REST API through confluent-kafka's own client.

Values use the Confluent wire format (magic byte 0, 4-byte schema id, Avro body), written and
read by confluent-kafka's ``AvroSerializer``/``AvroDeserializer`` (fastavro underneath), so any
client of the registry (kcat ``-s value=avro``, Java's ``KafkaAvroDeserializer``) reads them.
Works with Confluent Schema Registry and with Apicurio's compatibility API
(``.../apis/ccompat/v7``). Needs the ``kstream[avro]`` extra; nothing is imported before use.

Subjects are named by kstream itself (``subject_name``), not by the serializer's default: the
"associated" strategy that confluent-kafka 2.16 defaults to calls an endpoint Apicurio lacks.

Errors: a record that is not in the wire format, names an unknown schema id, or cannot be
resolved to the reader's schema raises :class:`DecodeError` (permanent: it goes to the Trash);
a registry that does not answer raises :class:`RegistryError` (retryable).
"""

from __future__ import annotations

import json
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from kstream.config import SubjectStrategy
from kstream.errors import ConfigError, DecodeError, EncodeError, RegistryError

MAGIC = 0
_NOT_FOUND = {40401, 40402, 40403, 40408}
_T = TypeVar("_T")


def subject_name(strategy: SubjectStrategy, topic: str, record_name: str) -> str:
    """The subject of a topic's values: ``topic-value`` (default), ``record``, or ``topic-record``."""
    if strategy == "record":
        return record_name
    if strategy == "topic_record":
        return f"{topic}-{record_name}"
    return f"{topic}-value"


def schema_id(data: bytes | None) -> int | None:
    """The schema id of a wire-format value, or None when it is not one."""
    if data is None or len(data) < 5 or data[0] != MAGIC:
        return None
    return int.from_bytes(data[1:5], "big")


@dataclass(frozen=True)
class Registered:
    subject: str
    version: int
    id: int
    schema: dict[str, Any]


class SchemaRegistry:
    """One registry client (thread-safe; it caches schemas and ids)."""

    def __init__(self, url: str, *, username: str | None = None, password: str | None = None,
                 strategy: SubjectStrategy = "topic", timeout: float = 10.0) -> None:
        try:
            from confluent_kafka.schema_registry import SchemaRegistryClient
        except ImportError:
            raise ConfigError("Avro payloads need the avro extra: pip install 'kstream[avro]'") from None
        conf: dict[str, Any] = {"url": url, "timeout": timeout}
        if username is not None:
            conf["basic.auth.user.info"] = f"{username}:{password or ''}"
        self.url = url
        self.strategy: SubjectStrategy = strategy
        self._client = SchemaRegistryClient(conf)
        # Workers keep their codecs (which hold this object) as long as they live and have no
        # close hook: close the HTTP connections when this is collected, not in a socket's
        # finalizer (a ResourceWarning).
        self._closer = weakref.finalize(self, self._client.close)

    def close(self) -> None:
        """Close the HTTP connections (also done when the client is garbage collected)."""
        self._closer()

    def __enter__(self) -> SchemaRegistry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def subject(self, topic: str, record_name: str) -> str:
        return subject_name(self.strategy, topic, record_name)

    # -- serde ------------------------------------------------------------------------------

    def serializer(self, topic: str, schema: str, subject: str, *, auto_register: bool) -> Callable[[dict[str, Any]], bytes]:
        """Encodes records of ``topic`` with ``schema`` (its id looked up in ``subject`` once)."""
        from confluent_kafka.schema_registry.avro import AvroSerializer
        from confluent_kafka.serialization import MessageField, SerializationContext

        conf = {"auto.register.schemas": auto_register, "subject.name.strategy": lambda _ctx, _name: subject}
        serialize = AvroSerializer(self._client, schema, conf=conf)
        ctx = SerializationContext(topic, MessageField.VALUE)

        def encode(record: dict[str, Any]) -> bytes:
            data: bytes = self._call(serialize, record, ctx, f"cannot encode a record for {topic} as Avro")
            return data

        return encode  # it holds self: the client stays open while a worker keeps its codecs

    def deserializer(self, topic: str, reader_schema: str | None) -> Callable[[bytes | None], dict[str, Any]]:
        """Decodes wire-format values of ``topic``, resolved to ``reader_schema`` (None: the writer's)."""
        from confluent_kafka.schema_registry.avro import AvroDeserializer
        from confluent_kafka.serialization import MessageField, SerializationContext

        deserialize = AvroDeserializer(self._client, reader_schema)
        ctx = SerializationContext(topic, MessageField.VALUE)

        def decode(data: bytes | None) -> dict[str, Any]:
            if data is None:
                raise DecodeError("message has no value (null payload)", reason="decode")
            if schema_id(data) is None:
                raise DecodeError("payload is not Avro in the schema registry's wire format (no magic byte 0)",
                                  reason="decode")
            record = self._call(deserialize, data, ctx, f"cannot decode Avro (schema id {schema_id(data)})")
            if not isinstance(record, dict):
                raise DecodeError("Avro payload is not a record", reason="decode")
            return record

        return decode

    def _call(self, serde: Callable[[Any, Any], Any], value: Any, ctx: Any, what: str) -> Any:
        try:
            return serde(value, ctx)
        except Exception as exc:  # noqa: BLE001  (mapped to kstream's tree, in one place)
            raise _mapped(exc, what) from None

    # -- subjects ---------------------------------------------------------------------------

    def latest(self, subject: str) -> Registered | None:
        """The latest version of ``subject``, or None when it has none."""
        found = self._ask(lambda: self._client.get_latest_version(subject), f"cannot read subject {subject}")
        if found is None:
            return None
        return Registered(subject, found.version or 0, found.schema_id or 0, json.loads(found.schema.schema_str or "{}"))

    def lookup(self, subject: str, schema: str) -> int | None:
        """The id under which ``schema`` is registered in ``subject``, or None."""
        found = self._ask(lambda: self._client.lookup_schema(subject, _avro(schema)),
                          f"cannot look up the schema in subject {subject}")
        return None if found is None else found.schema_id

    def compatibility(self, subject: str) -> str | None:
        """The subject's compatibility mode, or None when it sets none."""
        level = self._ask(lambda: self._client.get_compatibility(subject), f"cannot read the compatibility of {subject}")
        return str(level) if level else None

    def set_compatibility(self, subject: str, level: str) -> None:
        self._ask(lambda: self._client.set_compatibility(subject, level), f"cannot set the compatibility of {subject}",
                  missing_ok=False)

    def is_compatible(self, subject: str, schema: str) -> bool:
        """Whether the registry accepts ``schema`` as the next version of ``subject``."""
        return bool(self._ask(lambda: self._client.test_compatibility(subject, _avro(schema)),
                              f"cannot check the compatibility of {subject}", missing_ok=False))

    def register(self, subject: str, schema: str) -> int:
        """Register ``schema`` in ``subject`` (idempotent); its id. Refused: :class:`RegistryError`."""
        sid = self._ask(lambda: self._client.register_schema(subject, _avro(schema)),
                        f"registering in {subject} was refused", missing_ok=False)
        if sid is None:
            raise RegistryError(f"registering in {subject}: the registry returned no id")
        return int(sid)

    def _ask(self, call: Callable[[], _T], what: str, *, missing_ok: bool = True) -> _T | None:
        """``call()``, its errors mapped; None for "not found" when ``missing_ok``."""
        try:
            return call()
        except Exception as exc:  # noqa: BLE001  (mapped to kstream's tree, in one place)
            if missing_ok and getattr(exc, "error_code", None) in _NOT_FOUND:
                return None
            raise _mapped(exc, what) from None


def _avro(schema: str) -> Any:
    from confluent_kafka.schema_registry import Schema

    return Schema(schema, "AVRO")


def _mapped(exc: Exception, what: str) -> Exception:
    """One table from the client's exceptions to kstream's: bad data is permanent, an
    unreachable registry is retryable, anything the registry refused is not."""
    from confluent_kafka.schema_registry.error import SchemaRegistryError
    from confluent_kafka.serialization import SerializationError

    first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if isinstance(exc, SchemaRegistryError):
        if exc.error_code in _NOT_FOUND and "cannot decode" in what:
            return DecodeError(f"{what}: the registry does not know this schema ({first})", reason="schema")
        retryable = exc.http_status_code is None or exc.http_status_code >= 500
        return RegistryError(f"{what}: {first}", retryable=retryable)
    if isinstance(exc, SerializationError | EOFError | ValueError | IndexError | TypeError | KeyError | OverflowError):
        reason = "schema" if "resol" in first.lower() or "schema" in type(exc).__name__.lower() else "decode"
        if "cannot encode" in what:
            return EncodeError(f"{what}: {first}")
        return DecodeError(f"{what}: {first}", reason=reason)
    # httpx transport errors and the like: the registry did not answer.
    return RegistryError(f"{what}: schema registry unreachable: {first}", retryable=True)
