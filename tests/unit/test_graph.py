"""``kstream graph``: Mermaid and DOT pictures of a fan-out / fan-in topology."""

from __future__ import annotations

import re
from typing import Any

import pytest

from kstream import Topology
from kstream.graph import render


def _shop(*, enrich: str = "enrich", out: tuple[str, ...] = ("erp.orders",)) -> Topology:
    """shop.orders.raw -> parse -> (enrich, audit) -> deliver -> erp.orders."""
    t = Topology("shop")

    def step(payload: Any) -> Any:
        return payload

    t.node("parse", source="shop.orders.raw")(step)
    t.node(enrich, after="parse", prefetch=8)(step)
    t.node("audit", after="parse")(step)
    t.node("deliver", after=[enrich, "audit"], to=out)(step)
    return t


def _mermaid(text: str) -> tuple[dict[str, str], set[tuple[str, str, str]]]:
    """Labels by id, and edges as (from label, to label, edge label)."""
    labels = dict(re.findall(r'^  (\S+?)\[\(?"([^"]*)"\)?\]$', text, re.M))
    edges = {
        (labels[a], labels[b], label or "")
        for a, label, b in re.findall(r"^  (\S+) -->(?:\|([^|]*)\|)? (\S+)$", text, re.M)
    }
    return labels, edges


def _dot(text: str) -> tuple[dict[str, str], set[tuple[str, str, str]]]:
    labels = dict(re.findall(r'^  (\S+) \[label="([^"]*)", shape=\w+\];$', text, re.M))
    edges = {
        (labels[a], labels[b], label or "")
        for a, b, label in re.findall(r'^  (\S+) -> (\S+?)(?: \[label="([^"]*)"\])?;$', text, re.M)
    }
    return labels, edges


EXPECTED_EDGES = {
    ("shop.orders.raw", "parse", ""),
    ("parse", "enrich (prefetch 8)", "prod.shop.enrich"),
    ("parse", "audit", "prod.shop.audit"),
    ("enrich (prefetch 8)", "deliver", "prod.shop.deliver"),
    ("audit", "deliver", "prod.shop.deliver"),
    ("deliver", "erp.orders", ""),
}


def test_mermaid_shows_every_node_topic_and_edge() -> None:
    # Given a fan-out (parse -> enrich, audit) and a fan-in (enrich, audit -> deliver)
    text = render(_shop(), "prod")

    # When the picture is read back
    labels, edges = _mermaid(text)

    # Then it is a flowchart with the nodes, the external topics, and the node input topics on edges
    assert text.startswith("flowchart LR\n")
    assert sorted(labels.values()) == sorted(["parse", "enrich (prefetch 8)", "audit", "deliver", "shop.orders.raw", "erp.orders"])
    assert edges == EXPECTED_EDGES
    assert '[("shop.orders.raw")]' in text, "external topics are drawn as cylinders"


def test_mermaid_is_the_default() -> None:
    assert render(_shop(), "prod") == render(_shop(), "prod", "mermaid")


def test_dot_shows_every_node_topic_and_edge() -> None:
    text = render(_shop(), "prod", "dot")
    labels, edges = _dot(text)
    assert text.startswith('digraph "shop" {\n') and text.endswith("\n}")
    assert sorted(labels.values()) == sorted(["parse", "enrich (prefetch 8)", "audit", "deliver", "shop.orders.raw", "erp.orders"])
    assert edges == EXPECTED_EDGES
    assert text.count("shape=cylinder") == 2 and text.count("shape=box") == 4


def test_every_line_of_the_picture_was_understood() -> None:
    # Guards the parsers above: a line they skip would hide a missing edge
    for fmt, parse, extra in (("mermaid", _mermaid, 1), ("dot", _dot, 3)):
        text = render(_shop(), "prod", fmt)
        labels, edges = parse(text)
        assert len(text.splitlines()) == len(labels) + len(edges) + extra, fmt


_DOT_ID = re.compile(r'^(?:[A-Za-z_][A-Za-z0-9_]*|"[^"]*")$')


def test_dot_ids_are_valid_for_node_names_with_a_hyphen() -> None:
    text = render(_shop(enrich="en-rich"), "prod", "dot")
    ids = re.findall(r"^  (\S+) \[label=", text, re.M) + re.findall(r"^  (\S+) -> (\S+?)[ ;]", text, re.M)
    flat = [i for group in ids for i in ((group,) if isinstance(group, str) else group)]
    assert all(_DOT_ID.match(i) for i in flat), [i for i in flat if not _DOT_ID.match(i)]


@pytest.mark.parametrize("fmt", ["mermaid", "dot"])
def test_distinct_topics_are_distinct_nodes(fmt: str) -> None:
    text = render(_shop(out=("erp.orders", "erp-orders")), "prod", fmt)  # type: ignore[arg-type]
    labels, edges = (_mermaid if fmt == "mermaid" else _dot)(text)
    assert {"erp.orders", "erp-orders"} <= set(labels.values())
    assert {("deliver", "erp.orders", ""), ("deliver", "erp-orders", "")} <= edges
