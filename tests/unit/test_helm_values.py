"""``kstream helm values``: the chart's per-node values written from a topology."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from kstream import Topology
from kstream.cli.helm import KEY_MAX, chart_values, node_key, to_yaml
from kstream.cli.main import cli
from kstream.config import load_settings

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def _shop() -> Topology:
    t = Topology("shop")

    def step(payload: Any) -> Any:
        return payload

    t.node("parse", source="shop.orders.raw")(step)
    t.node("Enrich_Customer", after="parse")(step)
    t.node("deliver", after="Enrich_Customer", to="erp.orders")(step)
    return t


def test_values_name_each_node_its_group_topic_and_partitions() -> None:
    settings = load_settings(environ={}, overrides={"namespace": "prod", "topics": {
        "partitions": 4, "nodes": {"shop.deliver": {"partitions": 12}}}})
    values = chart_values(_shop(), settings, "shop:topology")
    assert values["app"] == "shop:topology"
    assert values["topology"] == "shop"
    assert values["kafka"] == {"namespace": "prod"}
    nodes = values["nodes"]
    assert isinstance(nodes, dict)
    enrich = node_key("Enrich_Customer")
    assert list(nodes) == ["parse", enrich, "deliver"]
    assert nodes["parse"] == {"node": "parse", "group": "prod.shop.parse", "topic": "shop.orders.raw", "partitions": 4}
    assert nodes[enrich] == {"node": "Enrich_Customer", "group": "prod.shop.Enrich_Customer",
                             "topic": "prod.shop.Enrich_Customer", "partitions": 4}
    assert nodes["deliver"]["partitions"] == 12
    # Counts the broker reported win over the settings (a source= topic is someone else's).
    assert chart_values(_shop(), settings, "x", {"shop.orders.raw": 9})["nodes"]["parse"]["partitions"] == 9  # type: ignore[index]


@pytest.mark.parametrize("name", ["parse", "Enrich_Customer", "enrich-customer", "a" * 100, "_x_", "UPPER", "9lives"])
def test_node_keys_are_dns_labels_that_fit_the_chart(name: str) -> None:
    key = node_key(name)
    assert DNS_LABEL.match(key) and len(key) <= KEY_MAX
    assert node_key(name) == key  # stable across runs


def test_node_keys_of_names_differing_in_case_or_separator_differ() -> None:
    names = ["enrich_customer", "enrich-customer", "Enrich-Customer", "a" * 30, "a" * 31]
    assert len({node_key(n) for n in names}) == len(names)
    assert node_key("enrich-customer") == "enrich-customer"  # valid names stay as they are


def test_yaml_is_what_a_yaml_parser_reads_back() -> None:
    values = {"app": "a: b # not a comment", "kafka": {"namespace": "ns"}, "nodes": {}, "n": 3}
    assert yaml.safe_load(to_yaml(values)) == values


def test_cli_writes_values_to_stdout_or_a_file(tmp_path: Path, repo_root: Path) -> None:
    app = f"{repo_root}/examples/orders.py:topology"
    runner = CliRunner()
    shown = runner.invoke(cli, ["-n", "demo", "helm", "values", app, "--app-ref", "orders:topology"])
    assert shown.exit_code == 0, shown.output
    values = yaml.safe_load(shown.stdout)
    assert values["app"] == "orders:topology"
    assert values["nodes"]["price"] == {"node": "price", "group": "demo.orders.price", "topic": "demo.orders.price",
                                        "partitions": 6}
    out = tmp_path / "nodes.yaml"
    written = runner.invoke(cli, ["-n", "demo", "helm", "values", app, "-o", str(out)])
    assert written.exit_code == 0
    assert yaml.safe_load(out.read_text())["nodes"] == values["nodes"]
    assert "wrote values for 3 node(s) of orders" in written.stderr


def test_cli_bad_app_or_unwritable_output_is_one_line_and_exit_1(tmp_path: Path, repo_root: Path) -> None:
    runner = CliRunner()
    missing = runner.invoke(cli, ["helm", "values", "no/such/file.py:topology"])
    assert missing.exit_code == 1
    assert missing.stderr.strip() == "error: no such file: no/such/file.py"
    app = f"{repo_root}/examples/orders.py:topology"
    unwritable = runner.invoke(cli, ["helm", "values", app, "-o", str(tmp_path / "no" / "dir" / "v.yaml")])
    assert unwritable.exit_code == 1
    assert unwritable.stderr.startswith("error: cannot write") and unwritable.stderr.count("\n") == 1
