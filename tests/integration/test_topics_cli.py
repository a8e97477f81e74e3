"""Provisioning and the CLI against the real broker; kcat talks to kstream topics."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner
from confluent_kafka.admin import AdminClient, ConfigResource, NewPartitions

from kstream.cli.main import cli
from kstream.config import Settings
from tests.integration.kafkatools import consume, create_topics, produce, provision, running, wait_until

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CHAIN = "tests/apps/chain.py:topology"


def _cli(settings: Settings, *args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    runner = CliRunner()
    result = runner.invoke(cli, ["-b", settings.bootstrap_servers, "-n", settings.namespace, *args],
                           env={"CHAIN_SRC": f"{settings.namespace}.in", "CHAIN_DST": f"{settings.namespace}.out", **(env or {})},
                           catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def test_apply_is_idempotent_and_plan_reports_drift(settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(ROOT)
    ns = settings.namespace
    # Given nothing exists: plan shows what would be created, external topics as missing
    code, out, _ = _cli(settings, "topics", "plan", CHAIN)
    assert code == 0
    assert f"create   {ns}.chain.enrich" in out and f"create   {ns}.trash" in out and "cleanup.policy=compact" in out
    assert f"missing  {ns}.in" in out
    # When applied twice
    code, out, _ = _cli(settings, "topics", "apply", CHAIN, "--create-external")
    assert code == 0 and "8 change(s) applied" in out
    assert f"create   {ns}.chain.parse.replay" in out  # replays of the source= node (issue 9.7)
    assert f"create   {ns}.status" in out and "segment.ms=3600000" in out
    code, out, _ = _cli(settings, "topics", "apply", CHAIN, "--create-external")
    # Then the second time changes nothing
    assert code == 0 and "0 change(s) applied" in out
    admin = AdminClient({"bootstrap.servers": settings.bootstrap_servers})
    trash_cfg = admin.describe_configs([ConfigResource(ConfigResource.Type.TOPIC, f"{ns}.trash")])
    assert next(iter(trash_cfg.values())).result(10)["cleanup.policy"].value == "compact"

    # Given drift: more partitions than wanted on one topic, fewer on another, a config changed
    for fut in admin.create_partitions([NewPartitions(f"{ns}.chain.enrich", 8)]).values():
        fut.result(10)
    config = tmp_path / "kstream.toml"
    config.write_text('[topics.nodes."chain.deliver"]\npartitions = 7\nconfig = { "retention.ms" = "3600000" }\n')
    # (metadata of the grown topic reaches every broker component after a moment)
    wait_until(lambda: "has 8 partitions" in _cli(settings, "topics", "plan", CHAIN)[1], timeout=30, what="metadata")
    code, out, _ = _cli(settings, "--config", str(config), "topics", "plan", CHAIN)
    assert code == 0
    assert f"drift    {ns}.chain.enrich  has 8 partitions, wants 6" in out
    assert f"drift    {ns}.chain.deliver  has 6 partitions, wants 7 (apply --grow-partitions" in out
    # When applied with --grow-partitions: grows and alters, still reports what it will not fix
    code, out, err = _cli(settings, "--config", str(config), "topics", "apply", CHAIN, "--grow-partitions")
    assert code == 0 and f"grow     {ns}.chain.deliver" in out and f"drift    {ns}.chain.enrich" in err
    wait_until(lambda: f"ok       {ns}.chain.deliver" in _cli(settings, "--config", str(config), "topics", "plan", CHAIN)[1],
               timeout=30, what="the grown and altered topic to show as wanted")


def test_cli_errors_are_one_line_with_nonzero_exit(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    cases = [
        (["graph", "tests/apps/nope.py:topology"], "no such file"),
        (["graph", "tests.apps.nope:topology"], "cannot import tests.apps.nope"),
        (["graph", "tests/apps/chain.py:nothing"], "has no attribute 'nothing'"),
        (["graph", "tests/apps/chain.py:make_chain"], "not a kstream Topology"),
        (["run", CHAIN, "--node", "nope"], "has no node 'nope'"),
    ]
    for args, expected in cases:
        code, out, err = _cli(settings, *args)
        assert code == 1, (args, out, err)
        assert err.count("\n") == 1 and expected in err and "Traceback" not in err, (args, err)


def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_broker_fails_fast_with_one_line() -> None:
    # A real subprocess once: the console script's exit code and stderr as a user sees them
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "kstream.cli.main", "-b", f"127.0.0.1:{_dead_port()}", "topics", "plan", CHAIN],
        cwd=ROOT, capture_output=True, text=True, timeout=60, env={**os.environ, "CHAIN_SRC": "a", "CHAIN_DST": "b"},
    )
    elapsed = time.monotonic() - start
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0 and "no Kafka broker answered" in proc.stderr, proc.stderr
    assert elapsed < 20


def test_graph_prints_mermaid_and_dot(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    code, out, _ = _cli(settings, "graph", CHAIN)
    assert code == 0 and out.startswith("flowchart LR") and 'n0["parse"]' in out
    assert f"n0 -->|{settings.namespace}.chain.enrich| n2" in out
    code, out, _ = _cli(settings, "graph", CHAIN, "--format", "dot")
    assert code == 0 and out.startswith('digraph "chain"') and 'n2 [label="enrich", shape=box];' in out
    assert f'n2 -> n3 [label="{settings.namespace}.chain.deliver"];' in out


def test_kcat_feeds_a_source_topic_and_reads_the_to_topic(settings: Settings) -> None:
    # Given the chain, with kcat (a client nobody here wrote) producing plain JSON into its source topic
    from tests.apps.chain import make_chain

    src, dst = f"{settings.namespace}.in", f"{settings.namespace}.out"
    create_topics(settings.bootstrap_servers, src, dst)
    topology = make_chain(src, dst)
    provision(topology, settings)
    lines = "".join(f'k{i}|{{"id": {i}, "key": "k{i}", "seq": 1, "amount": 2.5}}\n' for i in range(20))
    subprocess.run(["kcat", "-b", settings.bootstrap_servers, "-P", "-t", src, "-K", "|"], input=lines, text=True,
                   check=True, timeout=30)
    with running(topology, settings):
        consume(settings.bootstrap_servers, dst, count=20, timeout=60)
    # Then kcat reads the to= topic as plain JSON, keys intact
    out = subprocess.run(["kcat", "-b", settings.bootstrap_servers, "-C", "-t", dst, "-e", "-q", "-f", "%k\t%s\n"],
                         capture_output=True, text=True, check=True, timeout=30).stdout
    rows = [line.split("\t", 1) for line in out.splitlines() if line]
    assert len(rows) == 20
    for key, value in rows:
        doc = orjson.loads(value)
        assert key == doc["key"] and doc["total"] == 3.0 and doc["parsed"] is True


def test_kafka_consumer_groups_tool_shows_kstream_lag(settings: Settings) -> None:
    from kstream.dev.broker import CONSUMER_GROUP_COMMAND, LocalBroker, java_tool
    from tests.apps.chain import make_chain

    src, dst = f"{settings.namespace}.in", f"{settings.namespace}.out"
    create_topics(settings.bootstrap_servers, src, dst)
    topology = make_chain(src, dst)
    provision(topology, settings)
    libs = LocalBroker(Path("/tmp/unused-broker-dir")).resolve()
    produce(settings.bootstrap_servers, src, [("k", {"id": 1, "key": "k", "seq": 1, "amount": 1.0})])
    with running(topology, settings):
        assert len(consume(settings.bootstrap_servers, dst, count=1, timeout=60)) == 1
    group = f"{settings.namespace}.chain.parse"
    argv = java_tool(libs, CONSUMER_GROUP_COMMAND, "--bootstrap-server", settings.bootstrap_servers, "--describe", "--group", group)
    wait_until(lambda: group in subprocess.run(argv, capture_output=True, text=True, timeout=60).stdout,
               timeout=60, what="kafka-consumer-groups to describe the kstream group")
