"""Avro payloads against a real broker and a real schema registry (Apicurio, started per session).

A Java consumer (Apicurio's Kafka deserializer) reads kstream's Avro output through the registry
(Debian's kcat is built without Avro support); undecodable and unknown-schema records
go to the Trash with the reason; an Avro entry is shown and edited as JSON and replayed; a new
optional field works both ways; an incompatible change is refused by ``schemas apply``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner

from kstream.avro_topics import registry_of
from kstream.cli.main import cli
from kstream.config import Settings
from kstream.kafka.registry import schema_id
from tests.apps.avro_orders import make_evolving, make_orders
from tests.integration.avro_reader import read_avro_java
from tests.integration.kafkatools import consume, produce, running, wait_until

pytestmark = pytest.mark.integration

APP = "tests/apps/avro_orders.py:topology"
EVOLVING = "tests/apps/avro_orders.py:evolving"


@pytest.fixture()
def avro_settings(settings: Settings, schema_registry: str) -> Settings:
    return settings.model_copy(update={"schema_registry": settings.model_validate(
        {"schema_registry": {"url": schema_registry}}).schema_registry})


def _cli(settings: Settings, *args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    assert settings.schema_registry is not None
    result = CliRunner().invoke(
        cli, ["-b", settings.bootstrap_servers, "-n", settings.namespace, *args],
        env={"KSTREAM_SCHEMA_REGISTRY_URL": settings.schema_registry.url, **(env or {})},
        catch_exceptions=False,
    )
    return result.exit_code, result.stdout, result.stderr


def _topics(settings: Settings) -> tuple[str, str]:
    return f"{settings.namespace}.orders.in", f"{settings.namespace}.orders.out"


def _read_with_java(settings: Settings, topic: str, count: int) -> list[dict[str, Any]]:
    assert settings.schema_registry is not None
    return read_avro_java(settings.bootstrap_servers, topic, count, settings.schema_registry.url)


def test_avro_nodes_write_the_registry_wire_format_that_a_java_consumer_reads(avro_settings: Settings) -> None:
    # Given the Avro topology, its schemas registered and topics created in one command
    src, dst = _topics(avro_settings)
    env = {"AVRO_SRC": src, "AVRO_DST": dst}
    code, out, err = _cli(avro_settings, "topics", "apply", "--create-external", "--schemas", APP, env=env)
    assert code == 0, err
    assert f"new        {avro_settings.namespace}.avro.score-value" in out
    assert f"new        {dst}-value" in out
    topology = make_orders(src, dst)
    # When JSON orders come in
    produce(avro_settings.bootstrap_servers, src, [(f"k{i}", {"id": i, "qty": i, "price": 30.0}) for i in range(1, 5)])
    with running(topology, avro_settings):
        # And one more straight into the Avro node, as JSON that `kstream start` encodes
        code, out, err = _cli(avro_settings, "start", APP, "score", "--payload", '{"id": "s", "qty": 10, "price": 1.5}',
                              env=env)
        assert code == 0, err
        records = consume(avro_settings.bootstrap_servers, dst, count=5)
    # Then the node between them and the output topic hold Confluent wire format, whose schema
    # id is the registered one, and a Java consumer decodes the output through the registry
    registry = registry_of(avro_settings)
    latest = registry.latest(f"{dst}-value")
    assert latest is not None and latest.schema["name"] == "Scored"
    assert {schema_id(m.value()) for m in records} == {latest.id}
    between = consume(avro_settings.bootstrap_servers, f"{avro_settings.namespace}.avro.score", count=5)
    assert len(between) == 5 and all(schema_id(m.value()) is not None for m in between)
    decoded = _read_with_java(avro_settings, dst, 5)
    assert sorted(decoded, key=lambda r: r["id"]) == [
        {"id": "1", "total": 30.0, "big": False}, {"id": "2", "total": 60.0, "big": False},
        {"id": "3", "total": 90.0, "big": False}, {"id": "4", "total": 120.0, "big": True},
        {"id": "s", "total": 15.0, "big": False},
    ]


def test_schemas_show_gives_the_models_avro_schema(avro_settings: Settings) -> None:
    code, out, err = _cli(avro_settings, "schemas", "show", APP, "score")
    assert code == 0, err
    shown = json.loads(out)
    assert shown["input"]["name"] == "Order"
    assert [f["name"] for f in shown["input"]["fields"]] == ["id", "qty", "price"]
    assert shown["to"]["name"] == "Scored"
    code, _, err = _cli(avro_settings, "schemas", "show", APP, "ingest")
    assert code == 1 and "no Avro input or output" in err


def test_bad_avro_goes_to_the_trash_and_an_avro_entry_is_edited_as_json_and_replayed(
        avro_settings: Settings, tmp_path: Path) -> None:
    # Given the topology running
    src, dst = _topics(avro_settings)
    env = {"AVRO_SRC": src, "AVRO_DST": dst}
    assert _cli(avro_settings, "topics", "apply", "--create-external", "--schemas", APP, env=env)[0] == 0
    topology = make_orders(src, dst)
    score_in = f"{avro_settings.namespace}.avro.score"
    with running(topology, avro_settings):
        # When the Avro node gets a record that is not Avro, one whose schema id the registry
        # does not know, and a valid one its handler refuses (qty 0)
        produce(avro_settings.bootstrap_servers, score_in, [("junk", b'{"id": "j"}')], raw=True)
        produce(avro_settings.bootstrap_servers, score_in, [("ghost", b"\x00\x00\x0f\x42\x3f\x02a")], raw=True)
        produce(avro_settings.bootstrap_servers, src, [("zero", {"id": "z", "qty": 0, "price": 5.0})])

        # Then all three are in the Trash with their reasons, and the stream goes on
        def trashed() -> dict[str, Any]:
            code, out, _ = _cli(avro_settings, "trash", "list", "--json")
            return {e["key"]: e for e in json.loads(out)["entries"]} if code == 0 else {}

        wait_until(lambda: len(trashed()) == 3, timeout=60, what="three trash entries")
        entries = trashed()
        assert entries["junk"]["reason"] == "decode"
        assert entries["ghost"]["reason"] == "schema"
        assert "schema id 999999" in entries["ghost"]["error_message"]
        assert entries["zero"]["reason"] == "error" and "qty must be positive" in entries["zero"]["error_message"]

        # And `trash show` prints the Avro entry as JSON
        zero = entries["zero"]["id"]
        code, out, err = _cli(avro_settings, "trash", "show", zero)
        assert code == 0, err
        assert "payload (Avro, shown as JSON):" in out
        shown = json.loads(out.split("payload (Avro, shown as JSON):\n", 1)[1].split("\ntraceback:", 1)[0])
        assert shown == {"id": "z", "qty": 0, "price": 5.0}

        # When it is edited as JSON: a payload the model refuses is refused, a good one kept
        bad = tmp_path / "bad.json"
        bad.write_text('{"id": "z", "qty": "many", "price": 5.0}')
        code, _, err = _cli(avro_settings, "trash", "edit", zero, "--app", APP, "--file", str(bad), env=env)
        assert code == 1 and "validation" in err
        good = tmp_path / "good.json"
        good.write_text(json.dumps({**shown, "qty": 20}))
        code, out, err = _cli(avro_settings, "trash", "edit", zero, "--app", APP, "--file", str(good), env=env)
        assert code == 0, err
        # Then it is kept as the node's Avro, and its replay flows to the output
        code, out, err = _cli(avro_settings, "trash", "replay", zero)
        assert code == 0, err
        records = consume(avro_settings.bootstrap_servers, dst, count=1)
    assert len(records) == 1
    assert _read_with_java(avro_settings, dst, 1) == [{"id": "z", "total": 100.0, "big": True}]


def _run_node(topology_version: int, node: str, settings: Settings, src: str, out: str, expect_out: int) -> list[Any]:
    topology = make_evolving(src, out, topology_version)
    with running(topology, settings, nodes=[node]):
        if node == "read":
            return [orjson.loads(m.value()) for m in consume(settings.bootstrap_servers, out, count=expect_out)]
        mid = f"{settings.namespace}.evo.read"
        consume(settings.bootstrap_servers, mid, count=expect_out)
    return []


def test_a_new_optional_field_works_both_ways_and_an_incompatible_change_is_refused(avro_settings: Settings) -> None:
    src, out = _topics(avro_settings)
    subject = f"{avro_settings.namespace}.evo.read-value"
    registry = registry_of(avro_settings)

    def apply(version: int, *, topics: bool = False) -> tuple[int, str, str]:
        env = {"AVRO_SRC": src, "AVRO_DST": out, "AVRO_VERSION": str(version)}
        if topics:
            return _cli(avro_settings, "topics", "apply", "--create-external", "--schemas", EVOLVING, env=env)
        return _cli(avro_settings, "schemas", "apply", EVOLVING, env=env)

    # Given version 1 registered (BACKWARD, the default mode) and two records written with it
    code, _, err = apply(1, topics=True)
    assert code == 0, err
    assert registry.compatibility(subject) == "BACKWARD"
    produce(avro_settings.bootstrap_servers, src, [("a", {"id": "a", "qty": 1}), ("b", {"id": "b", "qty": 2})])
    _run_node(1, "write", avro_settings, src, out, 2)

    # When version 2 adds an optional field: plan shows it compatible, apply registers it
    env2 = {"AVRO_SRC": src, "AVRO_DST": out, "AVRO_VERSION": "2"}
    code, plan_out, err = _cli(avro_settings, "schemas", "plan", EVOLVING, env=env2)
    assert code == 0, err
    assert f"register   {subject}" in plan_out and "version 2, BACKWARD compatible" in plan_out
    code, _, err = apply(2)
    assert code == 0, err
    latest = registry.latest(subject)
    assert latest is not None and latest.version == 2

    # Then the new reader reads the old records (the new field gets its default)
    old_by_new = _run_node(2, "read", avro_settings, src, out, 2)
    assert sorted(old_by_new, key=lambda r: r["id"]) == [
        {"version": 2, "id": "a", "qty": 1, "note": None}, {"version": 2, "id": "b", "qty": 2, "note": None}]

    # And the old reader reads records written with the new schema (the new field is skipped)
    produce(avro_settings.bootstrap_servers, src, [("c", {"id": "c", "qty": 3, "note": "gift"})])
    _run_node(2, "write", avro_settings, src, out, 3)
    everything = _run_node(1, "read", avro_settings, src, out, 3)
    assert {"version": 1, "id": "c", "qty": 3} in everything

    # When version 3 changes qty's type and adds a required field: refused, one line per change
    code, _, err = apply(3)
    assert code == 1
    lines = [ln for ln in err.splitlines() if ln.startswith("incompatible:")]
    assert len(lines) == 2, err
    assert any("'qty' changed type long -> string" in ln for ln in lines)
    assert any("'region'" in ln and "no default" in ln for ln in lines)
    # And nothing was registered, by schemas apply nor by topics apply --schemas
    code, _, err = apply(3, topics=True)
    assert code == 1 and "nothing registered" in err
    latest = registry.latest(subject)
    assert latest is not None and latest.version == 2


def test_a_registry_that_does_not_answer_is_a_retryable_error_not_bad_data() -> None:
    import socket

    from kstream.errors import DecodeError, RegistryError
    from kstream.kafka.registry import SchemaRegistry

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    with SchemaRegistry(url, timeout=2.0) as registry:
        decode = registry.deserializer("t", None)
        with pytest.raises(RegistryError) as caught:
            decode(b"\x00\x00\x00\x00\x07\x02a")
        assert caught.value.retryable and not isinstance(caught.value, DecodeError)
        with pytest.raises(DecodeError) as bad:
            decode(b'{"id": 1}')
        assert bad.value.reason == "decode"
