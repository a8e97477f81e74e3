"""The Trash tooling against the real broker: list, show, edit, replay (exactly once), discard."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner
from confluent_kafka import Producer

from kstream.app import admin
from kstream.cli.main import cli
from kstream.config import Settings
from kstream.kafka.port import NewTopic
from kstream.trash import Attempt, TrashCodec, TrashEntry, entry_id
from tests.apps.chain import make_chain
from tests.integration.kafkatools import consume, create_topics, jsons, produce, provision, running, wait_until

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CHAIN = "tests/apps/chain.py:topology"


def _cli(settings: Settings, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(
        cli, ["-b", settings.bootstrap_servers, "-n", settings.namespace, *args],
        env={"CHAIN_SRC": f"{settings.namespace}.in", "CHAIN_DST": f"{settings.namespace}.out"},
        catch_exceptions=False,
    )
    return result.exit_code, result.stdout, result.stderr


def _listed(settings: Settings, *filters: str) -> dict[str, Any]:
    code, out, err = _cli(settings, "trash", "list", "--json", *filters)
    assert code == 0, err
    listed: dict[str, Any] = json.loads(out)
    return listed


def _trash_topic(settings: Settings) -> None:
    admin(settings).create_topics([NewTopic(settings.trash_topic, 3, 1, {"cleanup.policy": "compact"})])


def _entry(i: int, *, topic: str, topology: str = "bulk", node: str = "work", error_type: str = "ValueError",
           message: str = "bad value", age: timedelta = timedelta(0)) -> TrashEntry:
    when = datetime.now(UTC) - age
    return TrashEntry(
        id=entry_id(topology, node, topic, i % 3, i), topology=topology, node=node, reason="error",
        error_type=error_type, error_message=f"{message} {i}", traceback="Traceback (most recent call last):\n  boom\n",
        key=f"k{i}".encode(), value=orjson.dumps({"i": i}), headers=[("kstream-id", f"m{i}".encode()), ("x-app", b"yes")],
        topic=topic, partition=i % 3, offset=i, workflow=f"w{i}",
        attempts=(Attempt(when, f"{error_type}: {message} {i}"),), first_failure=when, last_failure=when,
    )


def _write(settings: Settings, entries: list[TrashEntry]) -> None:
    """Entries straight onto the Trash topic, as failing workers would leave them."""
    codec = TrashCodec()
    p = Producer({"bootstrap.servers": settings.bootstrap_servers, "linger.ms": 20, "enable.idempotence": True})
    for e in entries:
        while True:
            try:
                p.produce(settings.trash_topic, codec.encode(e), e.id.encode())
                break
            except BufferError:
                p.poll(0.1)
    assert p.flush(60) == 0


def test_list_filters_summary_json_and_show(settings: Settings) -> None:
    # Given 3 recent ValueErrors at bulk/a, 2 old KeyErrors at bulk/b and 1 at other/a
    _trash_topic(settings)
    a = [_entry(i, topic="t.a", node="a") for i in range(3)]
    b = [_entry(i, topic="t.b", node="b", error_type="KeyError", message="no such key", age=timedelta(days=3))
         for i in range(3, 5)]
    other = [_entry(5, topic="t.o", topology="other", node="a")]
    _write(settings, a + b + other)

    # When listed without filters: every entry and a summary per node and error type
    code, out, err = _cli(settings, "trash", "list")
    assert code == 0, err
    assert all(e.id in out for e in a + b + other)
    assert "       3  bulk/a  ValueError" in out and "       2  bulk/b  KeyError" in out and "       1  other/a  ValueError" in out
    assert out.rstrip().endswith("6 entries")

    # Then the filters narrow it down, alone and combined
    assert {e["id"] for e in _listed(settings, "--node", "b")["entries"]} == {e.id for e in b}
    assert {e["id"] for e in _listed(settings, "--topology", "bulk", "--node", "a")["entries"]} == {e.id for e in a}
    assert {e["id"] for e in _listed(settings, "--error", "NO SUCH")["entries"]} == {e.id for e in b}
    assert {e["id"] for e in _listed(settings, "--since", "1d")["entries"]} == {e.id for e in a + other}
    assert {e["id"] for e in _listed(settings, "--until", "2d")["entries"]} == {e.id for e in b}
    since = (datetime.now(UTC) - timedelta(days=4)).isoformat()
    until = (datetime.now(UTC) - timedelta(days=2)).isoformat()
    assert {e["id"] for e in _listed(settings, "--since", since, "--until", until)["entries"]} == {e.id for e in b}
    listed = _listed(settings, "--topology", "bulk")
    assert listed["total"] == 5
    assert {(s["node"], s["error_type"], s["count"]) for s in listed["summary"]} == {("a", "ValueError", 3), ("b", "KeyError", 2)}
    first = next(e for e in listed["entries"] if e["id"] == b[0].id)
    assert first["key"] == "k3" and first["topic"] == "t.b" and first["reason"] == "error" and first["edited"] is False

    # And show prints payload (pretty), headers, error and traceback
    code, out, err = _cli(settings, "trash", "show", b[0].id)
    assert code == 0, err
    assert '"i": 3' in out and "x-app: yes" in out and "KeyError: no such key 3" in out and "boom" in out
    assert "bulk/b" in out and "t.b [0] @ 3" in out


def test_edit_fixes_an_invalid_payload_and_replay_delivers_it(settings: Settings, monkeypatch: pytest.MonkeyPatch,
                                                                tmp_path: Path) -> None:
    monkeypatch.chdir(ROOT)
    ns = settings.namespace
    src, dst = f"{ns}.in", f"{ns}.out"
    create_topics(settings.bootstrap_servers, src, dst)
    topology = make_chain(src, dst)
    provision(topology, settings)
    with running(topology, settings):
        # Given an order whose amount fails the Order model at node enrich
        produce(settings.bootstrap_servers, src, [("inv", {"id": 1000, "key": "inv", "seq": 1, "amount": "lots"})])
        wait_until(lambda: _listed(settings)["total"] == 1, timeout=60, what="the entry in the Trash")
        entry = _listed(settings)["entries"][0]
        assert (entry["node"], entry["reason"], entry["topic"]) == ("enrich", "validation", f"{ns}.chain.enrich")

        # When an edit that is still invalid is attempted, it is refused with the reason, nothing changes
        bad = tmp_path / "bad.json"
        bad.write_bytes(orjson.dumps({"id": 1000, "key": "inv", "seq": 1, "amount": "still lots", "parsed": True}))
        code, _, err = _cli(settings, "trash", "edit", entry["id"], "--app", CHAIN, "--file", str(bad))
        assert code == 1 and len(err.strip().splitlines()) == 1
        assert "validation" in err and "amount" in err
        code, out, _ = _cli(settings, "trash", "show", entry["id"])
        assert '"amount": "lots"' in out and "(edited)" not in out

        # When a valid edit is kept and the entry replayed
        good = tmp_path / "good.json"
        good.write_bytes(orjson.dumps({"id": 1000, "key": "inv", "seq": 1, "amount": 10, "parsed": True}))
        code, out, err = _cli(settings, "trash", "edit", entry["id"], "--app", CHAIN, "--file", str(good))
        assert code == 0, err
        assert _listed(settings)["entries"][0]["edited"] is True
        code, out, err = _cli(settings, "trash", "replay", entry["id"])
        assert code == 0, err
        assert "replayed 1 entry" in out

        # Then it reaches the output, fixed, and the entry is gone
        out_msgs = consume(settings.bootstrap_servers, dst, count=1, timeout=60, committed=True)
        assert jsons(out_msgs) == [{"id": 1000, "key": "inv", "seq": 1, "total": 12.0, "parsed": True}]
        assert out_msgs[0].key() == b"inv"
    assert _listed(settings)["total"] == 0
    # and the replayed message went to enrich's input, original key, marked as a replay of the entry
    replayed = consume(settings.bootstrap_servers, f"{ns}.chain.enrich", committed=True, timeout=30,
                       until=lambda ms: any(dict(m.headers() or []).get("kstream-replay-of") for m in ms))
    marked = [m for m in replayed if dict(m.headers() or []).get("kstream-replay-of")]
    assert len(marked) == 1 and marked[0].key() == b"inv"
    assert dict(marked[0].headers())["kstream-replay-of"] == entry["id"].encode()
    assert [k for k, _ in marked[0].headers()].count("kstream-replay-of") == 1


def test_bulk_replay_killed_halfway_delivers_each_entry_exactly_once(settings: Settings) -> None:
    # Given 5,000 entries that failed at node bulk/work (its input topic), plus 10 of another topology that stay
    ns = settings.namespace
    target = f"{ns}.bulk.work"
    create_topics(settings.bootstrap_servers, target)
    _trash_topic(settings)
    _write(settings, [_entry(i, topic=target) for i in range(5000)])
    _write(settings, [_entry(i, topic=target, topology="other") for i in range(10_000, 10_010)])
    cmd = [sys.executable, "-m", "kstream.cli.main", "-b", settings.bootstrap_servers, "-n", ns,
           "trash", "replay", "--filter", "--topology", "bulk", "--batch-size", "100"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    # When a bulk replay is SIGKILLed once progress shows some done
    seen = ""
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT) as proc:
        assert proc.stderr is not None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            seen += line
            if line.startswith("replay: "):
                proc.send_signal(signal.SIGKILL)
                break
        proc.wait(30)
    assert proc.returncode == -signal.SIGKILL, f"replay was not killed halfway: {seen}"
    left = _listed(settings, "--topology", "bulk")["total"]
    assert 0 < left < 5000, f"{left} entries left: the kill did not land halfway"

    # and run again to the end
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=180)
    assert done.returncode == 0, done.stderr
    assert f"replayed {left} entries" in done.stdout

    # Then each of the 5,000 reached the target exactly once (read_committed), and the Trash holds only the others
    msgs = consume(settings.bootstrap_servers, target, count=5000, timeout=120, committed=True, settle=2.0)
    values = [orjson.loads(m.value())["i"] for m in msgs]
    assert len(values) == 5000 and set(values) == set(range(5000))
    assert all(m.key() == f"k{orjson.loads(m.value())['i']}".encode() for m in msgs)
    assert all(dict(m.headers())["x-app"] == b"yes" and dict(m.headers())["kstream-replay-of"] for m in msgs)
    assert _listed(settings, "--topology", "bulk")["total"] == 0
    assert _listed(settings)["total"] == 10


def test_discard_by_filter_removes_only_matching_entries(settings: Settings) -> None:
    # Given 3 entries at node a and 2 at node b
    _trash_topic(settings)
    a = [_entry(i, topic="t.a", node="a") for i in range(3)]
    b = [_entry(i, topic="t.b", node="b") for i in range(3, 5)]
    _write(settings, a + b)

    # When a dry run is asked: it names them and changes nothing
    code, out, err = _cli(settings, "trash", "discard", "--filter", "--node", "a", "--dry-run")
    assert code == 0, err
    assert "would discard 3 entries" in out and all(e.id in out for e in a)
    assert _listed(settings)["total"] == 5

    # When discarded by filter, and one more by id
    code, out, err = _cli(settings, "trash", "discard", "--filter", "--node", "a")
    assert code == 0, err
    assert "discarded 3 entries" in out and "discard: 3/3" in err
    assert {e["id"] for e in _listed(settings)["entries"]} == {e.id for e in b}
    code, out, err = _cli(settings, "trash", "discard", b[0].id)
    assert code == 0, err

    # Then only the unmatched entry is left, and nothing was replayed anywhere
    assert {e["id"] for e in _listed(settings)["entries"]} == {b[1].id}


def test_bad_input_is_one_line_and_a_failure(settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(ROOT)
    _trash_topic(settings)
    e = _entry(1, topic="t.a", topology="chain", node="enrich")
    _write(settings, [e])
    cases = [
        ("trash", "show", "nope"),
        ("trash", "replay", "nope", e.id),
        ("trash", "list", "--since", "yesterday-ish"),
        ("trash", "discard", "--filter", "--until", "10 parsecs"),
        ("trash", "edit", e.id, "--app", CHAIN, "--file", str(tmp_path / "missing.json")),
    ]
    for args in cases:
        code, _, err = _cli(settings, *args)
        assert code == 1, args
        assert len(err.strip().splitlines()) == 1 and err.startswith("error: "), (args, err)
    # neither ids nor filter options: a usage error
    code, _, err = _cli(settings, "trash", "replay")
    assert code == 2 and "give entry ids" in err
    code, _, _ = _cli(settings, "trash", "discard", "--filter")
    assert code == 2
    # and nothing changed
    assert [x["id"] for x in _listed(settings)["entries"]] == [e.id]


def test_edit_through_editor_is_validated_by_the_node(settings: Settings, monkeypatch: pytest.MonkeyPatch,
                                                      tmp_path: Path) -> None:
    # Given an entry of chain/enrich whose payload is not an Order
    monkeypatch.chdir(ROOT)
    _trash_topic(settings)
    e = _entry(1, topic=f"{settings.namespace}.chain.enrich", topology="chain", node="enrich")
    _write(settings, [e])
    editor = tmp_path / "editor.sh"

    def edit_with(content: str) -> tuple[int, str, str]:
        editor.write_text(f"#!/bin/sh\nprintf '%s' '{content}' > \"$1\"\n")
        editor.chmod(0o755)
        monkeypatch.setenv("EDITOR", str(editor))
        return _cli(settings, "trash", "edit", e.id, "--app", CHAIN)

    # When the editor saves something that is still no Order: refused, unchanged
    code, _, err = edit_with('{"id": 1}')
    assert code == 1 and "edit refused" in err and "key" in err
    assert _listed(settings)["entries"][0]["edited"] is False
    # When it saves a valid Order: kept, marked edited
    code, _, err = edit_with('{"id": 1, "key": "k1", "seq": 1, "amount": 2.5}')
    assert code == 0, err
    code, out, _ = _cli(settings, "trash", "show", e.id)
    assert "(edited)" in out and '"amount": 2.5' in out
