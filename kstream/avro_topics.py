"""Which topics of a topology hold Avro, their codecs, and the plan to register their schemas.

A topic is Avro when the node reading it says ``avro=`` (its input topic) or a node writing it
says ``to_avro=`` (its ``to=`` topics). Nodes that write an Avro topic encode with that topic's
schema, whatever they return (a model or a dict of the right shape). Schemas of topics kstream
writes are registered by ``kstream schemas apply``, after the compatibility check of every
subject: one refused change registers nothing. ``source=`` topics belong to their producers:
their subjects are read, never written.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from pydantic import BaseModel, ValidationError

from kstream.avro import AvroSpec, changes
from kstream.codecs import Decoder, validation_message
from kstream.config import RegistrySettings, Settings
from kstream.errors import ConfigError, DeclarationError, DecodeError, EncodeError, KstreamError
from kstream.kafka.registry import SchemaRegistry, schema_id
from kstream.topology import Node, Topology

Encoder = Callable[[Any], bytes]


@dataclass(frozen=True)
class AvroTopic:
    topic: str
    spec: AvroSpec
    external: bool
    """A ``source=`` topic: others produce it and own its subject."""


def avro_topics(topology: Topology, namespace: str) -> dict[str, AvroTopic]:
    """Every Avro topic of ``topology`` by name; a topic given two different schemas is an error."""
    found: dict[str, AvroTopic] = {}

    def add(topic: str, spec: AvroSpec, external: bool, node: str) -> None:
        seen = found.get(topic)
        if seen is not None and seen.spec.schema != spec.schema:
            raise DeclarationError(f"topic {topic} gets two different Avro schemas (node {node!r})", node=node)
        found[topic] = AvroTopic(topic, spec, external and (seen is None or seen.external))

    for node in topology.nodes.values():
        if node.avro is not None:
            add(node.input_topic(namespace), node.avro, node.source is not None, node.name)
        if node.to_avro is not None:
            for topic in node.to:
                add(topic, node.to_avro, False, node.name)
    return found


def registry_of(settings: Settings) -> SchemaRegistry:
    """The registry client of ``settings``; a :class:`ConfigError` when none is configured."""
    conf = _registry_settings(settings)
    password = conf.password.get_secret_value() if conf.password is not None else None
    return SchemaRegistry(conf.url, username=conf.username, password=password, strategy=conf.subject_strategy)


def _registry_settings(settings: Settings) -> RegistrySettings:
    if settings.schema_registry is None:
        raise ConfigError("this topology has Avro nodes: set schema_registry.url (env KSTREAM_SCHEMA_REGISTRY_URL)")
    return settings.schema_registry


# -- codecs of one worker ----------------------------------------------------------------------


def with_avro_decoder(node: Node, namespace: str, registry: SchemaRegistry) -> Node:
    """``node`` decoding its Avro input (resolved to its schema, whatever the writer's version)
    into its payload annotation if that is a model, else the ``avro=`` model, else a dict."""
    if node.avro is None:
        return node
    read = registry.deserializer(node.input_topic(namespace), node.avro.text())
    annotated = node.payload_type
    model = annotated if isinstance(annotated, type) and issubclass(annotated, BaseModel) and annotated is not BaseModel \
        else node.avro.model

    def decode(data: bytes | None) -> Any:
        record = read(data)
        if model is None:
            return record
        try:
            return model.model_validate(record)
        except ValidationError as exc:
            raise DecodeError(validation_message(exc, model), reason="validation") from None

    typed: Decoder = decode
    return replace(node, decode=typed)


def encoders(topology: Topology, node: Node, settings: Settings, registry: SchemaRegistry) -> dict[str, Encoder]:
    """Encoders of every Avro topic ``node`` may write (successors, ``Emit(to=)`` targets, ``to=``).

    Unless ``auto_register`` is set, each schema must already be registered (``kstream schemas
    apply``): a :class:`ConfigError` now is better than every message failing later.
    """
    conf = _registry_settings(settings)
    writes = {n.input_topic(settings.namespace) for n in topology.nodes.values() if n.source is None}
    writes |= set(node.to)
    return {topic: _encoder(topology, topic, avro.spec, conf, registry)
            for topic, avro in avro_topics(topology, settings.namespace).items() if topic in writes}


def _encoder(topology: Topology, topic: str, spec: AvroSpec, conf: RegistrySettings, registry: SchemaRegistry) -> Encoder:
    subject = registry.subject(topic, spec.name)
    if not conf.auto_register and registry.lookup(subject, spec.text()) is None:
        raise ConfigError(f"the Avro schema of {topic} is not registered in subject {subject}: "
                          f"run `kstream schemas apply` for topology {topology.name}")
    serialize = registry.serializer(topic, spec.text(), subject, auto_register=conf.auto_register)

    def encode(value: Any) -> bytes:
        try:
            record = spec.to_record(value)
        except TypeError as exc:
            raise EncodeError(str(exc)) from None
        return serialize(record)

    return encode


def json_to_avro(topology: Topology, node: Node, settings: Settings, value: bytes) -> bytes:
    """A JSON payload for an Avro node's input (``kstream start``, an edited Trash entry): checked
    by the node's decoder (:class:`DecodeError`), then encoded with the input topic's schema."""
    assert node.avro is not None
    payload = node.decode(value)
    with registry_of(settings) as registry:
        encode = _encoder(topology, node.input_topic(settings.namespace), node.avro, _registry_settings(settings), registry)
        return encode(payload)


def avro_as_json(settings: Settings, data: bytes | None) -> str | None:
    """A wire-format Avro value as indented JSON (read with its writer's schema), for people;
    None when it is not Avro, no registry is configured, or the registry cannot decode it."""
    if schema_id(data) is None or settings.schema_registry is None:
        return None
    try:
        with registry_of(settings) as registry:
            record = registry.deserializer("", None)(data)
    except KstreamError:
        return None
    return json.dumps(record, indent=2, ensure_ascii=False, default=str)


# -- schemas plan / apply ---------------------------------------------------------------------


class SchemaAction(enum.Enum):
    OK = "ok"
    NEW = "new"
    REGISTER = "register"
    INCOMPATIBLE = "refused"
    EXTERNAL = "external"


@dataclass(frozen=True)
class SchemaChange:
    action: SchemaAction
    topic: str
    subject: str
    spec: AvroSpec
    detail: str = ""
    problems: tuple[str, ...] = field(default=())
    """One line per incompatible change (INCOMPATIBLE only)."""

    def line(self) -> str:
        return f"{self.action.value:<10} {self.subject}  ({self.topic})" + (f"  {self.detail}" if self.detail else "")


def plan(topology: Topology, settings: Settings, registry: SchemaRegistry) -> list[SchemaChange]:
    """What ``apply`` would register, and what the registry would refuse; changes nothing."""
    default_mode = _registry_settings(settings).compatibility
    result = []
    for topic, avro in sorted(avro_topics(topology, settings.namespace).items()):
        subject = registry.subject(topic, avro.spec.name)
        text = avro.spec.text()
        latest = registry.latest(subject)
        if avro.external:
            detail = "read only (its producers register it)" + ("" if latest else "; the subject does not exist yet")
            result.append(SchemaChange(SchemaAction.EXTERNAL, topic, subject, avro.spec, detail))
        elif latest is None:
            result.append(SchemaChange(SchemaAction.NEW, topic, subject, avro.spec, f"new subject, mode {default_mode}"))
        elif (sid := registry.lookup(subject, text)) is not None:
            result.append(SchemaChange(SchemaAction.OK, topic, subject, avro.spec, f"registered (id {sid})"))
        else:
            mode = registry.compatibility(subject) or default_mode
            if registry.is_compatible(subject, text):
                result.append(SchemaChange(SchemaAction.REGISTER, topic, subject, avro.spec,
                                           f"version {latest.version + 1}, {mode} compatible"))
            else:
                problems = changes(latest.schema, avro.spec.schema, mode) or [
                    f"not {mode} compatible with version {latest.version} (the registry says so)"]
                result.append(SchemaChange(SchemaAction.INCOMPATIBLE, topic, subject, avro.spec,
                                           f"not {mode} compatible with version {latest.version}",
                                           tuple(f"{subject}: {p}" for p in problems)))
    return result


def apply(changes_: list[SchemaChange], settings: Settings, registry: SchemaRegistry) -> list[SchemaChange]:
    """Register what ``plan`` found; nothing at all when any change is incompatible (the caller
    reports those first). New subjects get the configured compatibility mode."""
    if any(c.action is SchemaAction.INCOMPATIBLE for c in changes_):
        return []
    mode = _registry_settings(settings).compatibility
    done = []
    for change in changes_:
        if change.action in (SchemaAction.NEW, SchemaAction.REGISTER):
            registry.register(change.subject, change.spec.text())
            if change.action is SchemaAction.NEW:
                registry.set_compatibility(change.subject, mode)
            done.append(change)
    return done
