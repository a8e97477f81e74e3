"""The envelope: kstream headers read from an input and written on its outputs (design.md s.3)."""

from __future__ import annotations

import pytest

from kstream import headers as hdr
from kstream.headers import IdGenerator, read


def test_no_headers_name_the_message_by_its_position_and_start_a_workflow() -> None:
    env = read(None, "shop.orders.raw", 2, 17)
    assert (env.message_id, env.workflow, env.hops, env.attempt, env.carried) == ("shop.orders.raw/2/17", None, 0, 1, [])
    assert read([], "t", 0, 0).message_id == "t/0/0"


def test_foreign_headers_are_carried_through_in_order() -> None:
    foreign = [("traceparent", b"00-abc-def-01"), ("x-tenant", b"acme"), ("x-null", None), ("x-tenant", b"again")]
    env = read(foreign, "t", 0, 0)
    assert env.carried == foreign
    assert env.message_id == "t/0/0"


def test_kstream_headers_are_read_and_not_carried() -> None:
    # Given a message written by a kstream node (and replayed from the trash)
    headers = [
        (hdr.ID, b"m-7"), (hdr.WORKFLOW, b"wf-1"), (hdr.PARENT, b"m-6"), (hdr.HOPS, b"3"),
        (hdr.ATTEMPT, b"2"), (hdr.ORIGIN, b"shop/parse"), (hdr.REPLAY_OF, b"trash-9"), (hdr.TRACEPARENT, b"tp"),
    ]

    # When it is read
    env = read(headers, "t", 0, 0)

    # Then lineage is parsed and only traceparent is carried
    assert (env.message_id, env.workflow, env.hops, env.attempt) == ("m-7", "wf-1", 3, 2)
    assert env.carried == [(hdr.TRACEPARENT, b"tp")]


def test_null_kstream_headers_are_as_if_missing() -> None:
    env = read([(hdr.ID, None), (hdr.HOPS, None), (hdr.WORKFLOW, None)], "t", 1, 2)
    assert (env.message_id, env.workflow, env.hops, env.carried) == ("t/1/2", None, 0, [])


def test_outgoing_increments_hops_keeps_the_workflow_and_sets_the_parent() -> None:
    # Given an input in the middle of a run, replayed from the trash
    env = read([(hdr.ID, b"m-7"), (hdr.WORKFLOW, b"wf-1"), (hdr.HOPS, b"3"), (hdr.ATTEMPT, b"4"),
                (hdr.REPLAY_OF, b"trash-9"), ("x-tenant", b"acme")], "t", 0, 0)

    # When the headers of one of its outputs are made
    out = env.outgoing(hdr.origin_header("shop", "enrich"))

    # Then
    assert dict(out) == {
        hdr.WORKFLOW: b"wf-1", hdr.PARENT: b"m-7", hdr.HOPS: b"4", hdr.ATTEMPT: b"1",
        hdr.ORIGIN: b"shop/enrich", "x-tenant": b"acme",
    }
    assert hdr.REPLAY_OF not in dict(out), "replay-of marks only the replayed message itself"
    assert hdr.ID not in dict(out), "each output gets its own id"


def test_outgoing_of_an_entry_message_starts_the_new_workflow() -> None:
    env = read(None, "t", 0, 5)
    env.workflow = "wf-new"  # the processor starts a workflow for an entry message
    out = dict(env.outgoing(hdr.origin_header("shop", "parse")))
    assert (out[hdr.WORKFLOW], out[hdr.PARENT], out[hdr.HOPS]) == (b"wf-new", b"t/0/5", b"1")


@pytest.mark.parametrize(
    "headers",
    [[(hdr.HOPS, b"many")], [(hdr.HOPS, b"-1")], [(hdr.ATTEMPT, b"0")], [(hdr.ATTEMPT, b"1.5")], [(hdr.ID, b"\xff")]],
    ids=["hops not a number", "negative hops", "attempt 0", "attempt not an int", "id not utf8"],
)
def test_kstream_headers_that_make_no_sense_raise_value_error(headers: list[tuple[str, bytes | None]]) -> None:
    with pytest.raises(ValueError):
        read(headers, "t", 0, 0)


def test_get_returns_the_last_value() -> None:
    headers = [("a", b"1"), ("b", b"x"), ("a", b"2")]
    assert hdr.get(headers, "a") == b"2"
    assert hdr.get(headers, "missing") is None
    assert hdr.get(None, "a") is None


def test_ids_are_unique() -> None:
    ids = IdGenerator()
    many = [ids() for _ in range(100_000)]
    assert len(set(many)) == len(many)
    other = IdGenerator()
    assert other() not in set(many), "two generators (two processes) do not collide"
    assert all(i.isascii() and " " not in i for i in many[:10])


ORIGIN = hdr.origin_header("shop", "enrich")
LINEAGE_CASES = [
    [("kstream-id", b"m-5"), ("kstream-workflow", b"wf-1"), ("kstream-parent", b"m-4"), ("kstream-hops", b"4"),
     ("kstream-attempt", b"1"), ("kstream-origin", b"shop/parse")],
    [("x-trace", b"abc"), ("kstream-id", b"m-5"), ("kstream-workflow", b"wf-1"), ("kstream-hops", b"0"),
     ("traceparent", b"00-aa-bb-01"), ("x-none", None)],
    [("kstream-id", b"m-5"), ("kstream-workflow", b"wf-1"), ("kstream-hops", b"200")],
]


@pytest.mark.parametrize("headers", LINEAGE_CASES)
def test_lineage_builds_the_same_output_headers_as_read_then_outgoing(headers: list[tuple[str, bytes | None]]) -> None:
    # The fast path's headers are the general path's, byte for byte, in the same order
    assert hdr.lineage(headers, ORIGIN, hop_limit=1000) == read(headers, "t", 0, 1).outgoing(ORIGIN)


@pytest.mark.parametrize("headers", [
    [("kstream-id", b"m-5"), ("kstream-hops", b"1")],                                     # no workflow: read() starts one
    [("kstream-workflow", b"wf-1"), ("kstream-hops", b"1")],                              # no id: named by position
    [("kstream-id", b"m-5"), ("kstream-workflow", b"wf-1"), ("kstream-attempt", b"2")],   # a retry
    [("kstream-id", b"m-5"), ("kstream-workflow", b"wf-1"), ("kstream-replay-of", b"tr")],  # a replay
    [("kstream-id", b"m-5"), ("kstream-workflow", b"wf-1"), ("kstream-hops", b"-1")],     # out of range
    [("kstream-id", b"m-5"), ("kstream-workflow", b"wf-1"), ("kstream-hops", None)],      # no value
    [("kstream-id", b"\xff"), ("kstream-workflow", b"wf-1")],                             # not UTF-8
    [("kstream-id", b"m-5"), ("kstream-workflow", b"wf-1"), ("kstream-hops", b"10")],     # at the hop limit
], ids=["no-workflow", "no-id", "retry", "replay", "negative-hops", "null-hops", "not-utf8", "hop-limit"])
def test_lineage_leaves_every_unusual_message_to_the_general_path(headers: list[tuple[str, bytes | None]]) -> None:
    assert hdr.lineage(headers, ORIGIN, hop_limit=10) is None
