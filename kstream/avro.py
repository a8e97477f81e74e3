"""Avro schemas of payloads: from a pydantic model or an ``.avsc`` file, and what changed between two.

A node declared with ``avro=`` reads Avro from its input topic; ``to_avro=`` makes its outputs to
``to=`` topics Avro. Either takes a pydantic model (its schema is derived here), an ``.avsc`` file
name, or ``True`` for the model of the handler's payload annotation. The wire format is
Confluent's (magic byte, schema id, Avro body) and the schemas live in a schema registry; this
module only knows schemas, not the registry (:mod:`kstream.kafka.registry`).

Python type to Avro, for model fields:

=====================  ==========================================================
``str``                ``string``
``int`` / ``float``    ``long`` / ``double``
``bool`` / ``bytes``   ``boolean`` / ``bytes``
``datetime``           ``long`` with ``timestamp-millis`` (give it a time zone)
``date`` / ``UUID``    ``int`` with ``date`` / ``string`` with ``uuid``
``X | None``           ``["null", X]``; a field defaulting to ``None`` has default null
``list[X]``            ``array``; ``dict[str, X]``: ``map``
a nested model         a nested ``record`` (named once, referenced by name after)
=====================  ==========================================================

A field with a default keeps it in the schema: that is what makes adding an optional field a
compatible change. The record is named after the class, or its ``model_config`` ``title`` (so
that ``OrderV1`` and ``OrderV2`` can both be the record ``Order``); a class attribute
``__avro_namespace__`` sets its namespace.
"""

from __future__ import annotations

import datetime as dt
import json
import types
import typing
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from kstream.errors import DeclarationError, WrongOutputType

Compatibility = Literal["BACKWARD", "BACKWARD_TRANSITIVE", "FORWARD", "FORWARD_TRANSITIVE",
                        "FULL", "FULL_TRANSITIVE", "NONE"]

_PRIMITIVES: dict[Any, Any] = {
    str: "string", int: "long", float: "double", bool: "boolean", bytes: "bytes",
    dt.datetime: {"type": "long", "logicalType": "timestamp-millis"},
    dt.date: {"type": "int", "logicalType": "date"},
    uuid.UUID: {"type": "string", "logicalType": "uuid"},
}


@dataclass(frozen=True)
class AvroSpec:
    """The Avro schema of one topic's values, and the model its records are read into (if any)."""

    schema: dict[str, Any]
    model: type[BaseModel] | None = None

    @property
    def name(self) -> str:
        """The record's full name (what the record subject strategies use)."""
        ns = self.schema.get("namespace")
        return f"{ns}.{self.schema['name']}" if ns else str(self.schema["name"])

    def text(self) -> str:
        """The schema as the registry stores it (canonical key order is the registry's job)."""
        return json.dumps(self.schema)

    def to_record(self, value: object) -> dict[str, Any]:
        """An output value as the dict the Avro writer wants (models are dumped, dicts pass)."""
        if isinstance(value, BaseModel):
            return value.model_dump(mode="python")
        if isinstance(value, dict):
            return value
        raise WrongOutputType(f"an Avro output must be a pydantic model or a dict, not {type(value).__name__}")


def model_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The Avro record schema of a pydantic model (see the module docstring for the mapping)."""
    return _record(model, set())


def spec_for(avro: object, payload_type: Any, *, node: str, near: Path | None = None) -> AvroSpec:
    """The :class:`AvroSpec` a node declaration asks for with ``avro=`` / ``to_avro=``.

    ``True`` means the model of ``payload_type``; a model class its schema; a string names an
    ``.avsc`` file, looked up as given, then in ``schemas/`` of the working directory, then in
    ``schemas/`` next to (or above) ``near``, the folder of the module that declares the node.
    """
    model = payload_type if _is_model(payload_type) else None
    if avro is True:
        if model is None:
            raise DeclarationError(f"node {node!r}: avro=True needs a pydantic model as the payload annotation; "
                                   "give avro=Model or avro='file.avsc'", node=node)
        return AvroSpec(model_schema(model), model)
    if _is_model(avro):
        return AvroSpec(model_schema(avro), avro)  # type: ignore[arg-type]
    if isinstance(avro, str | Path):
        return AvroSpec(_load_avsc(Path(avro), node=node, near=near), model)
    raise DeclarationError(f"node {node!r}: avro= takes True, a pydantic model or an .avsc file name", node=node)


def _load_avsc(name: Path, *, node: str, near: Path | None) -> dict[str, Any]:
    candidates = [name, Path("schemas") / name]
    if near is not None:
        candidates += [near / "schemas" / name, near.parent / "schemas" / name]
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        raise DeclarationError(f"node {node!r}: Avro schema {name} not found (looked in "
                               f"{', '.join(str(c) for c in candidates)})", node=node)
    try:
        schema = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DeclarationError(f"node {node!r}: cannot read Avro schema {path}: {exc}", node=node) from None
    if not isinstance(schema, dict) or schema.get("type") != "record":
        raise DeclarationError(f"node {node!r}: {path} is not an Avro record schema", node=node)
    return schema


def _is_model(value: object) -> bool:
    return isinstance(value, type) and issubclass(value, BaseModel)


def _record(model: type[BaseModel], named: set[str]) -> dict[str, Any]:
    named.add(_name(model))
    fields = []
    for name, info in model.model_fields.items():
        avro_type = _type(info.annotation, named, where=f"{model.__name__}.{name}")
        field: dict[str, Any] = {"name": info.alias or name, "type": avro_type}
        if info.description:
            field["doc"] = info.description
        if info.default is not PydanticUndefined:
            default = info.default
            if default is not None and isinstance(avro_type, list):
                # Avro takes a union's default from its first branch: put the default's first.
                field["type"] = sorted(avro_type, key=lambda t: t == "null")
            field["default"] = _json_default(default)
        elif info.default_factory is not None:
            field["default"] = _json_default(info.default_factory())  # type: ignore[call-arg]
        fields.append(field)
    schema: dict[str, Any] = {"type": "record", "name": _name(model), "fields": fields}
    namespace = getattr(model, "__avro_namespace__", None)
    if namespace:
        schema["namespace"] = namespace
    if model.__doc__ and model.__doc__ is not BaseModel.__doc__:
        schema["doc"] = " ".join(model.__doc__.split())
    return schema


def _name(model: type[BaseModel]) -> str:
    """The record name: the model's ``title`` if set (keeps one name across versions), else its class name."""
    return str(model.model_config.get("title") or model.__name__)


def _type(annotation: Any, named: set[str], *, where: str) -> Any:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return _type(args[0], named, where=where)
    if origin in (typing.Union, types.UnionType):
        branches = [a for a in args if a is not type(None)]
        if len(branches) != 1:
            raise DeclarationError(f"{where}: only X | None unions map to Avro")
        inner = _type(branches[0], named, where=where)
        return ["null", inner] if type(None) in args else inner
    if origin is list:
        return {"type": "array", "items": _type(args[0], named, where=where)}
    if origin is dict:
        if args and args[0] is not str:
            raise DeclarationError(f"{where}: Avro maps have string keys")
        return {"type": "map", "values": _type(args[1] if args else Any, named, where=where)}
    if origin is Literal and all(isinstance(a, str) for a in args):
        return "string"
    if _is_model(annotation):
        return _name(annotation) if _name(annotation) in named else _record(annotation, named)
    if annotation in _PRIMITIVES:
        return _PRIMITIVES[annotation]
    raise DeclarationError(f"{where}: {annotation!r} has no Avro mapping (use str, int, float, bool, bytes, "
                           "datetime, date, UUID, X | None, list, dict[str, X] or a model)")


def _json_default(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, bytes):
        return value.decode("latin-1")  # Avro's JSON form of bytes defaults
    if isinstance(value, (dt.datetime, dt.date, uuid.UUID)):
        raise DeclarationError(f"default {value!r}: give time and uuid fields no default, or None")
    return value


# -- what changed between two record schemas ---------------------------------------------------

_PROMOTIONS = {("int", "long"), ("int", "float"), ("int", "double"), ("long", "float"), ("long", "double"),
               ("float", "double"), ("string", "bytes"), ("bytes", "string")}


def changes(old: dict[str, Any], new: dict[str, Any], mode: str) -> list[str]:
    """One line per change of ``new`` that ``mode`` forbids, against ``old`` (the latest version).

    A readable account for people; the registry's own check decides. BACKWARD: the new schema
    must read data written with the old one; FORWARD: the old one must read the new one's data;
    FULL: both. Transitive modes are checked against the latest version only here.
    """
    mode = mode.upper().removesuffix("_TRANSITIVE")
    lines: list[str] = []
    if mode in ("BACKWARD", "FULL"):
        lines += _unreadable(writer=old, reader=new, who="the new schema cannot read old records")
    if mode in ("FORWARD", "FULL"):
        lines += _unreadable(writer=new, reader=old, who="readers with the old schema cannot read new records")
    return lines


def _unreadable(*, writer: dict[str, Any], reader: dict[str, Any], who: str) -> list[str]:
    lines = []
    if writer.get("name") != reader.get("name"):
        lines.append(f"record renamed {writer.get('name')} -> {reader.get('name')}: {who}")
    written = {f["name"]: f for f in writer.get("fields", [])}
    for field in reader.get("fields", []):
        name = field["name"]
        if name not in written:
            if "default" not in field:
                lines.append(f"field {name!r} is in one version only and has no default: {who}")
            continue
        before, after = _describe(written[name]["type"]), _describe(field["type"])
        if not _readable(written[name]["type"], field["type"]):
            lines.append(f"field {name!r} changed type {before} -> {after}: {who}")
    return lines


def _describe(avro_type: Any) -> str:
    if isinstance(avro_type, list):
        return "[" + ", ".join(_describe(t) for t in avro_type) + "]"
    if isinstance(avro_type, dict):
        return str(avro_type.get("logicalType") or avro_type.get("name") or avro_type.get("type"))
    return str(avro_type)


def _readable(writer: Any, reader: Any) -> bool:
    """Whether Avro schema resolution reads ``writer`` data with ``reader`` (a shallow check)."""
    if isinstance(writer, list):
        return all(_readable(w, reader) for w in writer)
    if isinstance(reader, list):
        return any(_readable(writer, r) for r in reader)
    w, r = _base(writer), _base(reader)
    return w == r or (w, r) in _PROMOTIONS


def _base(avro_type: Any) -> str:
    if isinstance(avro_type, dict):
        kind = str(avro_type.get("type"))
        return str(avro_type.get("name", kind)) if kind in ("record", "enum", "fixed") else kind
    return str(avro_type)
