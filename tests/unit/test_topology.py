"""Topology declarations: errors that name the node, handler introspection, the graph."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from pydantic import BaseModel

from kstream import Context, Retry, Topology
from kstream.errors import DeclarationError, DecodeError


class Order(BaseModel):
    id: int
    name: str = ""


def _noop(payload: Any) -> None:
    return None


def _declare(topology: Topology, name: str, fn: Callable[..., Any] = _noop, **options: Any) -> None:
    topology.node(name, **options)(fn)


# -- declaration errors ----------------------------------------------------------------------


def _duplicate() -> None:
    t = Topology("t")
    _declare(t, "parse", source="in")
    _declare(t, "parse", source="in")


def _three_params() -> None:
    def handler(payload: Any, ctx: Context, extra: int) -> None: ...

    _declare(Topology("t"), "parse", handler, source="in")


def _no_params() -> None:
    def handler() -> None: ...

    _declare(Topology("t"), "parse", handler, source="in")


def _unknown_after() -> None:
    t = Topology("t")
    _declare(t, "parse", source="in")
    _declare(t, "enrich", after="nope")
    t.validate()


DECLARATION_ERRORS: dict[str, tuple[Callable[[], object], str]] = {
    "duplicate name": (_duplicate, "parse"),
    "node name with a dot": (lambda: _declare(Topology("t"), "a.b", source="in"), "a.b"),
    "node name with a space": (lambda: _declare(Topology("t"), "a b", source="in"), "a b"),
    "empty node name": (lambda: _declare(Topology("t"), "", source="in"), "''"),
    "node name not a string": (lambda: _declare(Topology("t"), 5, source="in"), "5"),  # type: ignore[arg-type]
    "topology name with a dot": (lambda: Topology("shop.orders"), "shop.orders"),
    "empty topology name": (lambda: Topology(""), "''"),
    "bad topology processing": (lambda: Topology("t", processing="twice"), "'t'"),  # type: ignore[arg-type]
    "neither after nor source": (lambda: _declare(Topology("t"), "parse"), "parse"),
    "both after and source": (lambda: _declare(Topology("t"), "parse", after="x", source="in"), "parse"),
    "unknown after at validate": (_unknown_after, "enrich"),
    "bad source topic": (lambda: _declare(Topology("t"), "parse", source="no spaces"), "parse"),
    "bad to topic": (lambda: _declare(Topology("t"), "parse", source="in", to="a/b"), "parse"),
    "to topic '..'": (lambda: _declare(Topology("t"), "parse", source="in", to=".."), "parse"),
    "key with source": (lambda: _declare(Topology("t"), "parse", source="in", key=lambda v: v), "parse"),
    "key not callable": (lambda: _declare(Topology("t"), "parse", after="x", key="id"), "parse"),
    "prefetch 0": (lambda: _declare(Topology("t"), "parse", source="in", prefetch=0), "parse"),
    "prefetch negative": (lambda: _declare(Topology("t"), "parse", source="in", prefetch=-3), "parse"),
    "prefetch not an int": (lambda: _declare(Topology("t"), "parse", source="in", prefetch="4"), "parse"),
    "bad ordering": (lambda: _declare(Topology("t"), "parse", source="in", ordering="fifo"), "parse"),
    "bad on_failure": (lambda: _declare(Topology("t"), "parse", source="in", on_failure="drop"), "parse"),
    "bad node processing": (lambda: _declare(Topology("t"), "parse", source="in", processing="once"), "parse"),
    "retry not a Retry": (lambda: _declare(Topology("t"), "parse", source="in", retry=3), "parse"),
    "handler with no params": (_no_params, "parse"),
    "handler with three params": (_three_params, "parse"),
    "handler not callable": (lambda: Topology("t").node("parse", source="in")(42), "parse"),  # type: ignore[arg-type]
}


@pytest.mark.parametrize("case", sorted(DECLARATION_ERRORS))
def test_declaration_errors_raise_declaration_error_naming_the_node(case: str) -> None:
    declare, named = DECLARATION_ERRORS[case]
    with pytest.raises(DeclarationError) as raised:
        declare()
    message = str(raised.value)
    assert named in message, f"{case}: {message!r} does not name {named!r}"
    assert "\n" not in message


def test_a_cycle_is_found_at_validate_and_shown() -> None:
    # Given a -> b -> a through after=, plus an entry node so both are otherwise valid
    t = Topology("t")
    _declare(t, "entry", source="in")
    _declare(t, "a", after=["entry", "b"])
    _declare(t, "b", after="a")

    # When the whole graph is checked
    with pytest.raises(DeclarationError) as raised:
        t.validate()

    # Then the message shows the cycle, and the error names a node on it
    assert "a -> b -> a" in str(raised.value)
    assert raised.value.node in {"a", "b"}


def test_a_node_after_itself_is_a_cycle() -> None:
    t = Topology("t")
    _declare(t, "loop", after="loop")
    with pytest.raises(DeclarationError, match="loop -> loop"):
        t.validate()


def test_an_empty_topology_does_not_validate() -> None:
    with pytest.raises(DeclarationError, match="'t' has no nodes"):
        Topology("t").validate()


def test_get_of_an_unknown_node_names_it_and_the_known_ones() -> None:
    t = Topology("t")
    _declare(t, "parse", source="in")
    with pytest.raises(DeclarationError, match=r"no node 'nope' \(nodes: parse\)"):
        t.get("nope")


def test_a_bad_after_name_names_the_declaring_node() -> None:
    with pytest.raises(DeclarationError) as raised:
        _declare(Topology("t"), "enrich", after="a.b")
    assert "enrich" in str(raised.value)


def test_a_keyword_only_context_parameter_is_rejected() -> None:
    def handler(payload: Any, *, ctx: Context) -> None: ...

    with pytest.raises(DeclarationError, match="parse"):
        _declare(Topology("t"), "parse", handler, source="in")


def test_an_async_generator_handler_is_rejected() -> None:
    async def handler(payload: Any) -> Any:
        yield payload

    with pytest.raises(DeclarationError, match="parse"):
        _declare(Topology("t"), "parse", handler, source="in")


def test_a_second_parameter_annotated_as_something_else_is_rejected() -> None:
    def handler(payload: Any, limit: int) -> None: ...

    with pytest.raises(DeclarationError, match="'parse': the second parameter must be the Context"):
        _declare(Topology("t"), "parse", handler, source="in")


# -- what a declaration records --------------------------------------------------------------


def test_the_decorator_returns_the_function_unchanged() -> None:
    def handler(payload: dict[str, Any]) -> dict[str, Any]:
        return payload

    assert Topology("t").node("parse", source="in")(handler) is handler


def test_sync_and_async_handlers_are_told_apart() -> None:
    t = Topology("t")

    @t.node("sync", source="in")
    def sync(payload: Any) -> None: ...

    @t.node("async", source="in")
    async def async_(payload: Any) -> None: ...

    assert t.nodes["sync"].is_async is False
    assert t.nodes["async"].is_async is True


def test_a_context_is_detected_by_a_second_parameter() -> None:
    t = Topology("t")

    @t.node("plain", source="in")
    def plain(payload: Any) -> None: ...

    @t.node("named", source="in")
    def named(payload: Any, ctx) -> None: ...  # type: ignore[no-untyped-def]

    @t.node("annotated", source="in")
    def annotated(payload: Any, context: Context) -> None: ...

    @t.node("both", source="in")
    async def both(payload: Any, ctx: Context) -> None: ...

    assert {n: node.takes_context for n, node in t.nodes.items()} == {
        "plain": False, "named": True, "annotated": True, "both": True,
    }


def test_options_are_recorded() -> None:
    t = Topology("t", processing="exactly_once")
    retry = Retry(attempts=5, backoff=0.5)
    keyfn = lambda o: o["customer"]  # noqa: E731
    _declare(t, "parse", source="in", to=["x.out", "y.out"], prefetch=10, ordering="none", retry=retry, limit="erp")
    _declare(t, "enrich", after="parse", key=keyfn, processing="at_least_once")
    parse, enrich = t.nodes["parse"], t.nodes["enrich"]
    assert (parse.to, parse.prefetch, parse.ordering, parse.retry, parse.limit) == (("x.out", "y.out"), 10, "none", retry, "erp")
    assert (enrich.after, enrich.key, enrich.prefetch, enrich.ordering, enrich.retry) == (("parse",), keyfn, 1, "key", None)
    assert t.processing_of(parse) == "exactly_once"
    assert t.processing_of(enrich) == "at_least_once"


# -- decoders by annotation ------------------------------------------------------------------


def _decoder(fn: Callable[..., Any]) -> Callable[[bytes | None], Any]:
    t = Topology("t")
    _declare(t, "n", fn, source="in")
    return t.nodes["n"].decode


def test_a_pydantic_model_annotation_validates() -> None:
    def handler(order: Order) -> None: ...

    decode = _decoder(handler)
    assert decode(b'{"id": 1, "name": "x"}') == Order(id=1, name="x")
    with pytest.raises(DecodeError) as raised:
        decode(b'{"id": "not a number"}')
    assert raised.value.reason == "validation"


@pytest.mark.parametrize("annotation", [dict, list, Any, dict[str, Any], list[int]], ids=repr)
def test_json_annotations_decode_json(annotation: Any) -> None:
    def handler(payload):  # type: ignore[no-untyped-def]
        return payload

    handler.__annotations__ = {"payload": annotation}
    assert _decoder(handler)(b'[1, {"a": 2}]') == [1, {"a": 2}]


def test_no_annotation_decodes_json() -> None:
    assert _decoder(lambda payload: payload)(b'{"a": [1, 2]}') == {"a": [1, 2]}


def test_bytes_annotation_passes_the_raw_value() -> None:
    def handler(payload: bytes) -> None: ...

    assert _decoder(handler)(b"\x00\xffnot json") == b"\x00\xffnot json"


def test_str_annotation_decodes_utf8() -> None:
    def handler(payload: str) -> None: ...

    assert _decoder(handler)("héllo".encode()) == "héllo"


def test_an_unresolvable_context_annotation_does_not_change_the_payload_decoder() -> None:
    # Given a bytes handler whose ctx annotation cannot be resolved (e.g. imported under TYPE_CHECKING)
    def handler(payload: bytes, ctx: NotImportedContext) -> None: ...  # noqa: F821

    # Then the payload is still passed raw
    assert _decoder(handler)(b"\xffraw") == b"\xffraw"


def test_an_unresolvable_model_annotation_is_not_silently_json() -> None:
    # Given a model defined in a function, in a module with `from __future__ import annotations`
    class Local(BaseModel):
        id: int

    def handler(order: Local) -> None: ...

    # When it is declared, then either the model is used or the declaration fails loudly
    t = Topology("t")
    try:
        _declare(t, "n", handler, source="in")
    except DeclarationError as exc:
        assert "'n'" in str(exc)
        return
    assert t.nodes["n"].payload_type is Local


# -- the graph -------------------------------------------------------------------------------


def _diamond() -> Topology:
    """parse -> (enrich, audit) -> deliver: a fan-out and a fan-in."""
    t = Topology("shop")
    _declare(t, "deliver", after=["enrich", "audit"], to="erp.orders")  # declared first on purpose
    _declare(t, "audit", after="parse")
    _declare(t, "enrich", after="parse")
    _declare(t, "parse", source="shop.orders.raw")
    return t


def test_successors_are_every_node_after_a_node() -> None:
    t = _diamond()
    assert sorted(n.name for n in t.successors("parse")) == ["audit", "enrich"]
    assert [n.name for n in t.successors("enrich")] == ["deliver"]
    assert [n.name for n in t.successors("audit")] == ["deliver"]
    assert t.successors("deliver") == []


def test_order_puts_every_node_after_its_inputs() -> None:
    t = _diamond()
    t.validate()
    order = t.order()
    assert sorted(order) == sorted(t.nodes)
    for name, node in t.nodes.items():
        assert all(order.index(a) < order.index(name) for a in node.after), order


def test_input_topics_follow_the_naming_layout() -> None:
    t = _diamond()
    assert t.nodes["enrich"].input_topic("kstream") == "kstream.shop.enrich"
    assert t.nodes["deliver"].input_topic("prod") == "prod.shop.deliver"
    assert t.nodes["parse"].input_topic("prod") == "shop.orders.raw"
