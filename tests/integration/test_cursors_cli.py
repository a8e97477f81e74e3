"""``kstream cursors list|get|set|reset`` against the real broker and a batch node paging a local API."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from confluent_kafka import Producer

from examples.shop_api import ShopApi
from kstream.batch import CursorCodec, CursorState, read_cursors
from kstream.cli.main import cli
from kstream.config import Settings
from kstream.errors import BrokerError
from kstream.kafka.confluent import KafkaTopicReader
from tests.apps.shop_sync import make_shop_sync
from tests.integration.kafkatools import consume, create_topics, jsons, produce, provision, running, wait_until

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SHOP = "tests/apps/shop_sync.py:topology"
CHAIN = "tests/apps/chain.py:topology"


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)  # APP paths are relative to the repository


def _cli(settings: Settings, *args: str) -> tuple[int, str, str]:
    ns = settings.namespace
    result = CliRunner().invoke(
        cli, ["-b", settings.bootstrap_servers, "-n", ns, *args],
        env={"SHOP_DST": f"{ns}.out", "CHAIN_SRC": f"{ns}.in", "CHAIN_DST": f"{ns}.out"},
        catch_exceptions=False,
    )
    return result.exit_code, result.stdout, result.stderr


def _get(settings: Settings, scope: str = "") -> dict[str, Any] | None:
    code, out, _ = _cli(settings, "cursors", "get", SHOP, "fetch", "--scope", scope, "--json")
    if code != 0:
        return None
    state: dict[str, Any] = json.loads(out)
    return state


def _completed(settings: Settings, scope: str = "", *, after: str = "") -> bool:
    state = _get(settings, scope)
    return state is not None and state["run"] is None and (state["completed"] or "") > after


def _start(settings: Settings, scope: str = "") -> None:
    produce(settings.bootstrap_servers, f"{settings.namespace}.shop.fetch", [(scope, {})])


def _ids(settings: Settings, count: int) -> list[int]:
    out = consume(settings.bootstrap_servers, f"{settings.namespace}.out", count=count, timeout=60, settle=1.0)
    return [v["id"] for v in jsons(out)]


def _one_error_line(code: int, err: str, *texts: str) -> None:
    assert code == 1, err
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: "), err
    for text in texts:
        assert text in err, err


def test_list_get_set_and_reset_drive_the_next_runs(settings: Settings) -> None:
    ns = settings.namespace
    create_topics(settings.bootstrap_servers, f"{ns}.out")
    with ShopApi(1_000) as api:
        topology = make_shop_sync(api.url, f"{ns}.out")
        provision(topology, settings)
        with running(topology, settings):
            # Given a completed full run (scope "") and one of scope "eu"
            _start(settings)
            _start(settings, "eu")
            assert Counter(_ids(settings, 2_000)) == dict.fromkeys(range(1, 1_001), 2)
            wait_until(lambda: _completed(settings) and _completed(settings, "eu"), timeout=60, what="both runs to complete")

            # When listed: every scope with its cursors, counts and times
            code, out, err = _cli(settings, "cursors", "list", SHOP, "--json")
            assert code == 0, err
            listed = {s["scope"]: s for s in json.loads(out)}
            assert set(listed) == {"", "eu"}
            for s in listed.values():
                assert (s["node"], s["running"], s["cursor"], s["last_cursor"], s["pages"], s["items"]) == \
                       ("fetch", False, None, 1_000, 10, 1_000)
                assert s["updated"] and s["completed"]
            code, out, err = _cli(settings, "cursors", "list", SHOP, "--node", "fetch")
            assert code == 0, err
            assert out.splitlines()[0].split() == ["NODE", "SCOPE", "RUN", "CURSOR", "LAST_CURSOR", "PAGES", "ITEMS",
                                                   "UPDATED", "COMPLETED"]
            assert out.splitlines()[1].split()[:7] == ["fetch", '""', "-", "-", "1000", "10", "1000"]
            assert out.splitlines()[2].split()[:2] == ["fetch", '"eu"']
            code, out, err = _cli(settings, "cursors", "get", SHOP, "fetch", "--scope", "eu")
            assert code == 0, err
            assert "key:          shop/fetch/eu" in out and "last_cursor:  1000" in out

            # When the cursor of "" is set back to 900, the next run fetches only what follows it
            code, out, err = _cli(settings, "cursors", "set", SHOP, "fetch", "--cursor", "900")
            assert code == 0, err
            assert "shop/fetch/" in out and "900" in out
            state = _get(settings)
            assert state is not None and state["last_cursor"] == 900
            mark = state["updated"]
            _start(settings)
            counts = Counter(_ids(settings, 2_100))
            assert counts == {i: 3 if i > 900 else 2 for i in range(1, 1_001)}
            wait_until(lambda: _completed(settings, after=mark), timeout=60, what="the delta run to complete")

            # When scope "" is reset, the next run is a full sync again; "eu" keeps its cursor
            code, out, err = _cli(settings, "cursors", "reset", SHOP, "fetch")
            assert code == 0, err
            assert "reset shop/fetch/" in out
            code, _, err = _cli(settings, "cursors", "get", SHOP, "fetch")
            _one_error_line(code, err, "no cursor for scope", '"eu"')
            _start(settings)
            counts = Counter(_ids(settings, 3_100))
            assert counts == {i: 4 if i > 900 else 3 for i in range(1, 1_001)}
            wait_until(lambda: _completed(settings), timeout=60, what="the full resync to complete")
            eu = _get(settings, "eu")
            assert eu is not None and eu["last_cursor"] == 1_000

            # When every scope is reset, nothing is left
            code, out, err = _cli(settings, "cursors", "reset", SHOP, "fetch", "--all-scopes")
            assert code == 0, err
            assert out.count("reset shop/fetch/") == 2
            code, out, err = _cli(settings, "cursors", "list", SHOP, "--json")
            assert code == 0, err
            assert json.loads(out) == []


def _write_state(settings: Settings, state: CursorState) -> None:
    p = Producer({"bootstrap.servers": settings.bootstrap_servers})
    p.produce(settings.cursors_topic, CursorCodec().encode(state), state.key.encode())
    assert p.flush(30) == 0


def test_a_stuck_run_refuses_set_until_forced_and_then_a_new_run_starts(settings: Settings) -> None:
    ns = settings.namespace
    create_topics(settings.bootstrap_servers, f"{ns}.out")
    with ShopApi(300) as api:
        topology = make_shop_sync(api.url, f"{ns}.out")
        provision(topology, settings)
        # Given a scope whose run is in progress and will never continue (its page was discarded)
        _write_state(settings, CursorState("shop", "fetch", "", run="lost", cursor=200, last_cursor=100, pages=2,
                                           items=200, updated=datetime.now(UTC)))

        # When set without --force: refused, nothing written
        code, _, err = _cli(settings, "cursors", "set", SHOP, "fetch", "--cursor", "100")
        _one_error_line(code, err, "run lost is in progress", "--force")
        code, _, err = _cli(settings, "cursors", "reset", SHOP, "fetch")
        _one_error_line(code, err, "in progress")
        state = _get(settings)
        assert state is not None and state["run"] == "lost"

        # When forced: the run is abandoned and the next entry message starts a new run from 100
        code, out, err = _cli(settings, "cursors", "set", SHOP, "fetch", "--cursor", "100", "--force")
        assert code == 0, err
        assert "run lost abandoned" in out
        state = _get(settings)
        assert state is not None and (state["run"], state["cursor"], state["last_cursor"]) == (None, None, 100)
        with running(topology, settings):
            _start(settings)
            assert sorted(_ids(settings, 200)) == list(range(101, 301))
            wait_until(lambda: _completed(settings), timeout=60, what="the run to complete")
        state = _get(settings)
        assert state is not None and state["last_cursor"] == 300


def _readable(settings: Settings) -> bool:
    """A topic created a moment ago can still answer NOT_LEADER_FOR_PARTITION to a watermark
    request (KafkaTopicReader does not retry that yet): wait it out before asserting on errors."""
    try:
        read_cursors(KafkaTopicReader(settings.bootstrap_servers, {}), settings.cursors_topic, timeout=5)
    except BrokerError:
        return False
    return True


def test_errors_are_one_line(settings: Settings) -> None:
    ns = settings.namespace
    create_topics(settings.bootstrap_servers, f"{ns}.in", f"{ns}.out")
    provision(make_shop_sync("http://127.0.0.1:1", f"{ns}.out"), settings)
    wait_until(lambda: _readable(settings), timeout=30, what="the new cursors topic to be readable")

    code, _, err = _cli(settings, "cursors", "get", SHOP, "nope")
    _one_error_line(code, err, "no node 'nope'", "fetch")
    code, _, err = _cli(settings, "cursors", "list", CHAIN, "--node", "parse")
    _one_error_line(code, err, "'parse'", "not a batch node")
    code, _, err = _cli(settings, "cursors", "reset", CHAIN, "enrich")
    _one_error_line(code, err, "not a batch node")
    code, _, err = _cli(settings, "cursors", "get", SHOP, "fetch", "--scope", "nowhere")
    _one_error_line(code, err, 'scope "nowhere"')
    code, _, err = _cli(settings, "cursors", "reset", SHOP, "fetch", "--scope", "nowhere")
    _one_error_line(code, err, 'scope "nowhere"')
    code, _, err = _cli(settings, "cursors", "set", SHOP, "fetch", "--cursor", "{oops")
    _one_error_line(code, err, "--cursor is not valid JSON")
    code, _, err = _cli(settings, "cursors", "list", "tests/apps/missing.py:topology")
    _one_error_line(code, err, "no such file")

    # Usage errors exit 2
    code, _, err = _cli(settings, "cursors", "reset", SHOP, "fetch", "--scope", "a", "--all-scopes")
    assert code == 2 and "not both" in err
    code, _, _ = _cli(settings, "cursors", "set", SHOP, "fetch")
    assert code == 2

    # A topology without batch nodes lists nothing, successfully
    code, out, err = _cli(settings, "cursors", "list", CHAIN)
    assert code == 0, err
    assert "no batch nodes" in out
