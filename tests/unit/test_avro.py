"""pydantic -> Avro schemas, and the account of incompatible changes (pure logic, no registry)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Literal

import fastavro
import pytest
from pydantic import BaseModel, ConfigDict, Field

from kstream.avro import changes, model_schema, spec_for
from kstream.errors import DeclarationError


class Line(BaseModel):
    sku: str
    qty: int = 1


class Order(BaseModel):
    """An order."""

    model_config = ConfigDict(title="Order")
    __avro_namespace__ = "shop"

    id: str
    at: datetime
    lines: list[Line]
    first: Line
    again: Line | None = None
    note: str | None = Field(default=None, description="free text")
    tags: dict[str, float] = {}
    status: Literal["new", "paid"] = "new"
    raw: bytes = b""


def test_a_model_gives_a_valid_avro_record_schema() -> None:
    schema = model_schema(Order)
    fastavro.parse_schema(schema)  # raises on an invalid schema
    assert schema["name"] == "Order" and schema["namespace"] == "shop" and schema["doc"] == "An order."
    fields = {f["name"]: f for f in schema["fields"]}
    assert fields["at"]["type"] == {"type": "long", "logicalType": "timestamp-millis"}
    assert fields["lines"]["type"]["items"]["name"] == "Line"
    assert fields["first"]["type"] == "Line", "a nested record is defined once, then named"
    assert fields["again"] == {"name": "again", "type": ["null", "Line"], "default": None}
    assert fields["note"]["doc"] == "free text"
    assert fields["tags"] == {"name": "tags", "type": {"type": "map", "values": "double"}, "default": {}}
    assert fields["status"] == {"name": "status", "type": "string", "default": "new"}
    assert "default" not in fields["id"]


def test_records_round_trip_through_the_schema() -> None:
    import io

    order = Order(id="o1", at=datetime.fromisoformat("2026-11-30T05:00:00+00:00"), lines=[Line(sku="a")],
                  first=Line(sku="b", qty=2), note="x")
    schema = fastavro.parse_schema(model_schema(Order))
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, schema, order.model_dump(mode="python"))
    buf.seek(0)
    assert Order.model_validate(fastavro.schemaless_reader(buf, schema, None)) == order


def test_unmappable_types_and_bad_avro_arguments_are_declaration_errors() -> None:
    class Bad(BaseModel):
        value: int | str

    with pytest.raises(DeclarationError, match=re.escape("only X | None unions")):
        model_schema(Bad)
    with pytest.raises(DeclarationError, match="needs a pydantic model"):
        spec_for(True, dict, node="n")
    with pytest.raises(DeclarationError, match="not found"):
        spec_for("missing.avsc", None, node="n")


def test_changes_lists_each_incompatible_change_for_the_mode() -> None:
    old = {"type": "record", "name": "Order", "fields": [{"name": "id", "type": "string"}, {"name": "qty", "type": "long"}]}
    optional = {**old, "fields": [*old["fields"], {"name": "note", "type": ["null", "string"], "default": None}]}
    required = {**old, "fields": [{"name": "id", "type": "string"}, {"name": "qty", "type": "string"},
                                  {"name": "region", "type": "string"}]}
    widened = {**old, "fields": [{"name": "id", "type": "string"}, {"name": "qty", "type": "double"}]}
    assert changes(old, optional, "BACKWARD") == []
    assert changes(old, optional, "FULL") == []
    assert changes(old, widened, "BACKWARD") == [], "long -> double is a promotion"
    assert len(changes(old, widened, "FORWARD")) == 1, "but a double cannot be read as a long"
    lines = changes(old, required, "BACKWARD_TRANSITIVE")
    assert lines == ["field 'qty' changed type long -> string: the new schema cannot read old records",
                     "field 'region' is in one version only and has no default: the new schema cannot read old records"]
    assert changes(old, {**old, "fields": old["fields"][:1]}, "FORWARD") == [
        "field 'qty' is in one version only and has no default: readers with the old schema cannot read new records"]


def test_subject_names_follow_the_configured_strategy() -> None:
    from kstream.kafka.registry import subject_name

    assert subject_name("topic", "ns.t.n", "shop.Order") == "ns.t.n-value"
    assert subject_name("record", "ns.t.n", "shop.Order") == "shop.Order"
    assert subject_name("topic_record", "ns.t.n", "shop.Order") == "ns.t.n-shop.Order"


def test_registry_settings_come_from_the_file_and_the_environment(tmp_path: Any) -> None:
    from kstream.config import load_settings

    path = tmp_path / "k.toml"
    path.write_text('[schema_registry]\nurl = "http://file"\nsubject_strategy = "record"\n')
    settings = load_settings(path, environ={"KSTREAM_SCHEMA_REGISTRY_URL": "http://env",
                                            "KSTREAM_SCHEMA_REGISTRY_PASSWORD": "s3cret"})
    registry = settings.schema_registry
    assert registry is not None
    assert (registry.url, registry.subject_strategy, registry.compatibility) == ("http://env", "record", "BACKWARD")
    assert registry.password is not None and registry.password.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(settings)
    assert load_settings(environ={}).schema_registry is None
