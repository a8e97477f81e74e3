"""``kstream lag`` shows what the workers hold in flight, from their ``{ns}.status`` records."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from kstream.app import status_reader
from kstream.cli.main import cli
from kstream.config import Settings
from kstream.runtime.status import live_workers
from tests.apps.held import make_held
from tests.integration.kafkatools import create_topics, produce, provision, running, wait_until

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
HELD = "tests/apps/held.py:topology"


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)  # APP paths are relative to the repository


def _lag(settings: Settings, *args: str) -> tuple[str, dict[str, Any]]:
    """The table and the JSON of ``kstream lag`` for the held topology."""
    base = ["-b", settings.bootstrap_servers, "-n", settings.namespace, "lag", HELD, "--interval", "0"]
    env = {"HELD_SRC": f"{settings.namespace}.in"}
    table = CliRunner().invoke(cli, base, env=env, catch_exceptions=False)
    assert table.exit_code == 0, table.stderr
    as_json = CliRunner().invoke(cli, [*base, "--json"], env=env, catch_exceptions=False)
    assert as_json.exit_code == 0, as_json.stderr
    return table.stdout, json.loads(as_json.stdout)


def _in_flight(settings: Settings) -> dict[str, int | None]:
    return {n["node"]: n["in_flight"] for n in _lag(settings)[1]["nodes"]}


def test_lag_shows_in_flight_while_handlers_wait_and_dash_after_a_clean_stop(settings: Settings) -> None:
    ns = settings.namespace
    create_topics(settings.bootstrap_servers, f"{ns}.in", partitions=1)
    hold_release, step_release = threading.Event(), threading.Event()
    topology = make_held(f"{ns}.in", hold_release, step_release)
    provision(topology, settings)
    assert _in_flight(settings) == {"hold": None, "step": None}  # no worker runs yet

    # Given 10 messages (distinct keys) and handlers that wait until released
    produce(settings.bootstrap_servers, f"{ns}.in", [(f"k{i}", {"id": i}) for i in range(10)])
    try:
        with running(topology, settings):
            # Then the prefetch-10 node holds all 10 in flight, the serial one its batch
            def held() -> bool:
                seen = _in_flight(settings)
                return seen["hold"] == 10 and (seen["step"] or 0) >= 1

            wait_until(held, timeout=30, what="in-flight 10 for hold and >= 1 for step")
            table, _ = _lag(settings)
            rows = {line.split()[0]: line.split() for line in table.splitlines()[1:]}
            assert rows["hold"][4] == "10" and int(rows["step"][4]) >= 1, table
            # And the records are keyed per worker under worker/{topology}/{node}/
            live = live_workers(status_reader(settings).read_compacted(settings.status_topic, 10), now_ms=_now_ms())
            assert {(s.topology, s.node, s.state) for s in live} == {("held", "hold", "running"), ("held", "step", "running")}

            # When the handlers are released, in-flight drops to 0 while the workers run
            hold_release.set()
            step_release.set()
            wait_until(lambda: _in_flight(settings) == {"hold": 0, "step": 0}, timeout=30, what="in-flight 0")
            assert {n["node"]: n["lag"] for n in _lag(settings)[1]["nodes"]} == {"hold": 0, "step": 0}
    finally:
        hold_release.set()
        step_release.set()

    # Then after a clean stop the tombstones leave no live worker: "-" / null
    table, as_json = _lag(settings)
    assert all(n["in_flight"] is None for n in as_json["nodes"]), as_json
    assert [line.split()[4] for line in table.splitlines()[1:]] == ["-", "-"], table
    assert live_workers(status_reader(settings).read_compacted(settings.status_topic, 10), now_ms=_now_ms()) == []


def _now_ms() -> int:
    return int(time.time() * 1000)
