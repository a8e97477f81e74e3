"""``kstream start`` and ``kstream lag`` against the real broker."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from examples.shop_api import ShopApi
from kstream.cli.main import cli
from kstream.config import Settings
from tests.apps.chain import make_chain
from tests.apps.shop_sync import make_shop_sync
from tests.integration.kafkatools import consume, create_topics, jsons, produce, provision, running, wait_until

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SHOP = "tests/apps/shop_sync.py:topology"
CHAIN = "tests/apps/chain.py:topology"
STARTED = re.compile(r"^started (\S+): (\S+) \[(\d+)\] @ (\d+), workflow (\w+)$")


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)  # APP paths are relative to the repository


def _cli(settings: Settings, *args: str, bootstrap: str | None = None) -> tuple[int, str, str]:
    ns = settings.namespace
    result = CliRunner().invoke(
        cli, ["-b", bootstrap or settings.bootstrap_servers, "-n", ns, *args],
        env={"SHOP_DST": f"{ns}.out", "CHAIN_SRC": f"{ns}.in", "CHAIN_DST": f"{ns}.out"},
        catch_exceptions=False,
    )
    return result.exit_code, result.stdout, result.stderr


def _one_error_line(code: int, err: str, *texts: str) -> None:
    assert code == 1, err
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: "), err
    for text in texts:
        assert text in err, err


def test_start_runs_a_batch_node_to_completion(settings: Settings) -> None:
    ns = settings.namespace
    create_topics(settings.bootstrap_servers, f"{ns}.out")
    with ShopApi(500) as api:
        topology = make_shop_sync(api.url, f"{ns}.out")
        provision(topology, settings)
        with running(topology, settings):
            # When a run is started from the CLI
            code, out, err = _cli(settings, "start", SHOP, "fetch")
            assert code == 0, err
            started = STARTED.match(out.strip())
            assert started is not None, out
            assert started.group(1, 2) == ("shop/fetch", f"{ns}.shop.fetch")
            # Then every order reaches the output and the cursor of scope "" completes
            out_msgs = consume(settings.bootstrap_servers, f"{ns}.out", count=500, timeout=60, settle=1.0)
            assert sorted(v["id"] for v in jsons(out_msgs)) == list(range(1, 501))

            def completed() -> bool:
                code, out, _ = _cli(settings, "cursors", "get", SHOP, "fetch", "--json")
                return code == 0 and json.loads(out)["completed"] is not None

            wait_until(completed, timeout=30, what="the run to complete")
    # And the entry message carries the workflow id printed
    entry = consume(settings.bootstrap_servers, f"{ns}.shop.fetch", count=1, timeout=30)[0]
    assert entry.key() in (b"", None)
    assert dict(entry.headers() or [])["kstream-workflow"].decode() == started.group(5)


def test_start_a_plain_node_with_a_payload_key_and_file(settings: Settings, tmp_path: Path) -> None:
    ns = settings.namespace
    create_topics(settings.bootstrap_servers, f"{ns}.in", f"{ns}.out")
    topology = make_chain(f"{ns}.in", f"{ns}.out")
    provision(topology, settings)
    order = {"id": 7, "key": "k7", "seq": 1, "amount": 10}

    # When an order is started at the source node with --payload and a key, one from a --file at enrich
    code, out, err = _cli(settings, "start", CHAIN, "parse", "--payload", json.dumps(order), "--key", "k7")
    assert code == 0, err
    started = STARTED.match(out.strip())
    assert started is not None and started.group(2) == f"{ns}.in", out
    file = tmp_path / "order.json"
    file.write_text(json.dumps({**order, "id": 8, "parsed": True}))
    code, out, err = _cli(settings, "start", CHAIN, "enrich", "--file", str(file))
    assert code == 0, err
    assert f"{ns}.chain.enrich [" in out

    # Then the printed position holds the message with its key
    msgs = consume(settings.bootstrap_servers, f"{ns}.in", count=1, timeout=30)
    assert (msgs[0].key(), msgs[0].partition(), msgs[0].offset()) == (b"k7", int(started.group(3)), int(started.group(4)))
    # And both flow to the output
    with running(topology, settings):
        out_msgs = consume(settings.bootstrap_servers, f"{ns}.out", count=2, timeout=60, settle=0.5)
    assert sorted(v["id"] for v in jsons(out_msgs)) == [7, 8]
    assert all(v["total"] == 12.0 and v["parsed"] for v in jsons(out_msgs))

    # Errors: one line, exit 1; both sources: usage, exit 2
    code, _, err = _cli(settings, "start", CHAIN, "parse", "--payload", "{not json")
    _one_error_line(code, err, "--payload is not valid JSON")
    code, _, err = _cli(settings, "start", CHAIN, "parse", "--file", str(tmp_path / "missing.json"))
    _one_error_line(code, err, "cannot read", "missing.json")
    code, _, err = _cli(settings, "start", CHAIN, "enrich", "--payload", '{"id": 1}')
    _one_error_line(code, err, "refused by node 'enrich'", "amount")
    code, _, err = _cli(settings, "start", CHAIN, "nope")
    _one_error_line(code, err, "no node 'nope'")
    code, _, err = _cli(settings, "start", CHAIN, "parse", "--payload", "{}", "--file", str(file))
    assert code == 2 and "not both" in err


def _lag(settings: Settings, interval: str = "0") -> dict[str, Any]:
    code, out, err = _cli(settings, "lag", CHAIN, "--interval", interval, "--json")
    assert code == 0, err
    result: dict[str, Any] = json.loads(out)
    return result


def test_lag_shows_the_backlog_and_the_bottleneck_until_workers_catch_up(settings: Settings) -> None:
    ns = settings.namespace
    create_topics(settings.bootstrap_servers, f"{ns}.in", f"{ns}.out")
    topology = make_chain(f"{ns}.in", f"{ns}.out")
    provision(topology, settings)
    # Given 200 orders waiting at the source and no worker
    produce(settings.bootstrap_servers, f"{ns}.in",
            [(f"k{i % 10}", {"id": i, "key": f"k{i % 10}", "seq": i, "amount": 1}) for i in range(200)])

    # Then parse lags by 200 and is the bottleneck; the others are empty
    lag = _lag(settings)
    nodes = {n["node"]: n for n in lag["nodes"]}
    assert [n["node"] for n in lag["nodes"]] == ["parse", "enrich", "deliver"]
    assert (nodes["parse"]["lag"], nodes["enrich"]["lag"], nodes["deliver"]["lag"]) == (200, 0, 0)
    assert lag["bottleneck"] == "parse" and nodes["parse"]["bottleneck"] is True
    assert nodes["parse"]["group"] == f"{ns}.chain.parse" and nodes["parse"]["topics"] == [f"{ns}.in", f"{ns}.chain.parse.replay"]
    assert sum(p["end"] for p in nodes["parse"]["partitions"]) == 200
    assert nodes["parse"]["in_flight"] is None and nodes["parse"]["rate_in"] is None
    code, out, err = _cli(settings, "lag", CHAIN, "--interval", "0")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["NODE", "LAG", "IN", "OUT", "IN-FLIGHT"]
    assert lines[1].split() == ["parse", "200", "-", "-", "-", "<-", "bottleneck"]
    assert lines[2].split() == ["enrich", "0", "-", "-", "-"]

    # When the workers run, every lag drains to 0 and no node is the bottleneck
    with running(topology, settings):
        consume(settings.bootstrap_servers, f"{ns}.out", count=200, timeout=60)

        def drained() -> bool:
            lag = _lag(settings)
            return all(n["lag"] == 0 for n in lag["nodes"]) and lag["bottleneck"] is None

        wait_until(drained, timeout=60, what="every node's lag to reach 0")
        # Rates come from two samples over the interval
        lag = _lag(settings, "0.3")
        assert all(isinstance(n["rate_in"], float) and isinstance(n["rate_out"], float) for n in lag["nodes"])
        assert any(p["committed"] is not None for p in lag["nodes"][0]["partitions"])


def test_lag_with_no_broker_is_one_line(settings: Settings) -> None:
    code, out, err = _cli(settings, "lag", CHAIN, "--timeout", "1", bootstrap="127.0.0.1:1")
    _one_error_line(code, err, "no Kafka broker answered")
    assert out == ""
