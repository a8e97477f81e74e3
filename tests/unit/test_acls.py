"""Which rights each node needs (kstream.acls), from the topology alone."""

from __future__ import annotations

from kstream import Page, Retry, Topology
from kstream.acls import node_acls, plan
from kstream.config import load_settings

SETTINGS = load_settings(environ={}, overrides={"namespace": "ns"})


def _rights(topology: Topology, node: str) -> set[tuple[str, str, str, str]]:
    return {(a.operation, a.resource_type, a.pattern, a.name) for a in node_acls(topology, node, SETTINGS, "User:u")}


def _topology(processing: str = "at_least_once") -> Topology:
    t = Topology("shop", processing=processing)  # type: ignore[arg-type]

    @t.node("parse", source="raw.orders")
    def parse(v: dict) -> dict:  # type: ignore[type-arg]
        return v

    @t.batch("pull", emit="record")
    def pull(cursor: str | None) -> Page:
        return Page(items=[])

    @t.node("enrich", after=["parse", "pull"], limit="erp", ordering="none", retry=Retry(attempts=3))
    def enrich(v: dict) -> dict:  # type: ignore[type-arg]
        return v

    @t.node("deliver", after="enrich", to="erp.orders", on_failure="park_key")
    def deliver(v: dict) -> dict:  # type: ignore[type-arg]
        return v

    return t


COMMON = {("WRITE", "TOPIC", "LITERAL", "ns.trash"), ("WRITE", "TOPIC", "LITERAL", "ns.status")}


def test_a_plain_node_reads_its_input_and_group_and_writes_outputs_trash_and_status() -> None:
    # (a source= node also reads its replay topic: Trash replays of it come back there)
    assert _rights(_topology(), "parse") == COMMON | {
        ("READ", "TOPIC", "LITERAL", "raw.orders"), ("READ", "TOPIC", "LITERAL", "ns.shop.parse.replay"),
        ("READ", "GROUP", "LITERAL", "ns.shop.parse"),
        ("WRITE", "TOPIC", "LITERAL", "ns.shop.enrich"),
    }


def test_a_batch_node_also_reads_and_writes_cursors_and_feeds_its_own_input() -> None:
    assert _rights(_topology(), "pull") == COMMON | {
        ("READ", "TOPIC", "LITERAL", "ns.shop.pull"), ("WRITE", "TOPIC", "LITERAL", "ns.shop.pull"),
        ("READ", "GROUP", "LITERAL", "ns.shop.pull"),
        ("WRITE", "TOPIC", "LITERAL", "ns.shop.enrich"),
        ("READ", "TOPIC", "LITERAL", "ns.cursors"), ("WRITE", "TOPIC", "LITERAL", "ns.cursors"),
        ("READ", "GROUP", "PREFIXED", "kstream-reader-"),
    }


def test_a_limited_retrying_node_uses_its_retry_topic_and_the_limits_topic() -> None:
    assert _rights(_topology(), "enrich") == COMMON | {
        ("READ", "TOPIC", "LITERAL", "ns.shop.enrich"), ("READ", "GROUP", "LITERAL", "ns.shop.enrich"),
        ("READ", "TOPIC", "LITERAL", "ns.shop.enrich.retry"), ("WRITE", "TOPIC", "LITERAL", "ns.shop.enrich.retry"),
        ("WRITE", "TOPIC", "LITERAL", "ns.shop.deliver"),
        ("READ", "TOPIC", "LITERAL", "ns.limits"), ("WRITE", "TOPIC", "LITERAL", "ns.limits"),
    }


def test_a_parking_node_reads_the_trash_and_writes_its_to_topic() -> None:
    assert _rights(_topology(), "deliver") == COMMON | {
        ("READ", "TOPIC", "LITERAL", "ns.shop.deliver"), ("READ", "GROUP", "LITERAL", "ns.shop.deliver"),
        ("WRITE", "TOPIC", "LITERAL", "erp.orders"),
        ("READ", "TOPIC", "LITERAL", "ns.trash"), ("READ", "GROUP", "PREFIXED", "kstream-reader-"),
    }


def test_exactly_once_adds_the_transactional_id_prefix_of_the_node() -> None:
    extra = _rights(_topology("exactly_once"), "parse") - _rights(_topology(), "parse")
    assert extra == {("WRITE", "TRANSACTIONAL_ID", "PREFIXED", "ns.shop.parse.")}


def test_the_plan_has_one_principal_per_node_by_default_and_no_duplicates() -> None:
    acls = plan(_topology(), SETTINGS)
    assert {a.principal for a in acls} == {f"User:ns.shop.{n}" for n in ("parse", "pull", "enrich", "deliver")}
    shared = plan(_topology(), SETTINGS, principal="User:app")
    assert len({a.key for a in shared}) == len(shared)
    assert sum(a.name == "ns.trash" and a.operation == "WRITE" for a in shared) == 1
    only = plan(_topology(), SETTINGS, nodes=["parse"], principal="User:app")
    assert {a.name for a in only} == {"raw.orders", "ns.shop.parse.replay", "ns.shop.parse", "ns.shop.enrich", "ns.trash",
                                      "ns.status"}
    assert only[0].line() == "ALLOW User:app READ  TOPIC:LITERAL:raw.orders  (input)"


def test_the_plan_command_prints_bindings_and_rejects_bad_input_in_one_line() -> None:
    from click.testing import CliRunner

    from kstream.cli.main import cli

    app = "tests/apps/chain.py:topology"
    runner = CliRunner()
    ok = runner.invoke(cli, ["-n", "ns", "acls", "plan", app, "--node", "deliver", "--principal", "User:app"], env={"CHAIN_DST": "out.t"})
    assert ok.exit_code == 0, ok.output
    assert "ALLOW User:app WRITE TOPIC:LITERAL:out.t  (to=)" in ok.stdout.splitlines()
    unknown = runner.invoke(cli, ["acls", "plan", app, "--node", "nope"])
    assert (unknown.exit_code, len(unknown.stderr.splitlines())) == (1, 1)
    assert "has no node 'nope'" in unknown.stderr
    bad = runner.invoke(cli, ["acls", "plan", app, "--principal", "app"])
    assert bad.exit_code == 2 and "is not TYPE:NAME" in bad.stderr
