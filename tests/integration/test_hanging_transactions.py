"""Hanging transactions: a worker, `kstream lag` and `kstream txns` notice them; the abort releases the data."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner

from kstream.cli.main import cli
from kstream.config import Settings
from kstream.kafka.confluent import KafkaAdmin
from tests.apps.chain import make_chain
from tests.integration.hanging import make_hanging_transaction
from tests.integration.kafkatools import consume, create_topics, jsons, produce, provision, wait_until

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
APP = "tests/apps/chain.py:topology"


def _config(tmp_path: Path) -> Path:
    config = tmp_path / "kstream.toml"
    config.write_text("[runtime]\nhanging_after = 3\nhanging_check_interval = 0.5\n")
    return config


def test_a_hanging_transaction_is_reported_and_its_abort_releases_the_stuck_records(settings: Settings,
                                                                                     tmp_path: Path) -> None:
    # Given an exactly-once chain whose output partition 0 starts with a transaction nobody will end
    src, dst = f"{settings.namespace}.in", f"{settings.namespace}.out"
    create_topics(settings.bootstrap_servers, src, dst, partitions=2)
    provision(make_chain(src, dst, exactly_once=True), settings)
    start = make_hanging_transaction(settings.bootstrap_servers, dst, 0)
    n = 2_000
    produce(settings.bootstrap_servers, src, [(f"k{i % 40}", {"id": i, "key": f"k{i % 40}", "seq": i, "amount": 1.0})
                                              for i in range(n)])
    config = _config(tmp_path)
    env = {**os.environ, "CHAIN_SRC": src, "CHAIN_DST": dst, "CHAIN_EOS": "1", "KSTREAM_CONFIG": str(config),
           "KSTREAM_BOOTSTRAP_SERVERS": settings.bootstrap_servers, "KSTREAM_NAMESPACE": settings.namespace}
    log = tmp_path / "worker.log"
    with log.open("ab") as err:
        proc = subprocess.Popen([sys.executable, "-m", "kstream.cli.main", "run", APP, "--log-level", "info"],
                                cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=err)
    try:
        # When the chain has written every output (read uncommitted: n orders and the hanging record)
        written = consume(settings.bootstrap_servers, dst, count=n + 1, timeout=120)
        assert len(written) >= n + 1
        stuck = sum(1 for m in written if m.partition() == 0 and m.offset() > start)
        assert stuck > 0
        # Then partition 0's orders stay invisible to read_committed readers: its LSO is pinned
        client = KafkaAdmin(settings.bootstrap_servers, {})
        ends = {e.partition: e for e in client.stable_offsets([dst])}
        assert ends[0].stable == start < ends[0].high
        visible = consume(settings.bootstrap_servers, dst, count=n, timeout=8, committed=True)
        assert {m.partition() for m in visible} == {1} and len(visible) + stuck == n
        # and the worker says so loudly, with the exact remedy
        fix = f"kstream txns abort --topic {dst} --partition 0 --start-offset {start}"
        wait_until(lambda: fix in log.read_text(), timeout=30, what="the worker's hanging-transaction report")
        assert "ERROR" in next(ln for ln in log.read_text().splitlines() if fix in ln)
        runner = CliRunner()
        opts = ["--config", str(config), "-b", settings.bootstrap_servers, "-n", settings.namespace]
        lag = runner.invoke(cli, [*opts, "lag", APP, "--interval", "0"], env={"CHAIN_SRC": src, "CHAIN_DST": dst})
        assert lag.exit_code == 0, lag.output
        assert f"HANGING: hanging transaction on {dst}[0]" in lag.output and fix in lag.output
        # and `kstream txns hanging` lists it (and only it) for the topology
        listed = runner.invoke(cli, [*opts, "txns", "hanging", APP], env={"CHAIN_SRC": src, "CHAIN_DST": dst})
        assert listed.exit_code == 0, listed.output
        rows = [ln.split("\t") for ln in listed.output.splitlines()[1:]]
        assert [(r[0], r[1], r[2]) for r in rows] == [(dst, "0", str(start))]
        # When the operator first asks for a dry run, nothing changes
        dry = runner.invoke(cli, [*opts, "txns", "abort", "--topic", dst, "--partition", "0",
                                  "--start-offset", str(start), "--dry-run"])
        assert dry.exit_code == 0 and "would abort" in dry.output
        assert {e.partition: e.stable for e in client.stable_offsets([dst])}[0] == start
        # and a wrong offset is one clear line with exit 1
        wrong = runner.invoke(cli, [*opts, "txns", "abort", "--topic", dst, "--partition", "0",
                                    "--start-offset", str(start + 1), "--yes"])
        assert wrong.exit_code == 1 and wrong.output.strip().splitlines() == [
            f"error: no open transaction starts at offset {start + 1} of {dst}[0]"]
        # When the operator aborts it (confirming at the prompt)
        done = runner.invoke(cli, [*opts, "txns", "abort", "--topic", dst, "--partition", "0",
                                   "--start-offset", str(start)], input="y\n")
        assert done.exit_code == 0, done.output
        # Then every order is readable, exactly once, and the hanging record never
        out = consume(settings.bootstrap_servers, dst, count=n, timeout=60, committed=True, settle=2.0)
        ids = Counter(v["id"] for v in jsons(out))
        assert set(ids) == set(range(n)) and max(ids.values()) == 1
        # and the worker notices the partition moved on
        wait_until(lambda: f"{dst}[0] at offset {start} is no longer hanging" in log.read_text(), timeout=30,
                   what="the worker's all-clear")
        assert runner.invoke(cli, [*opts, "txns", "hanging", APP],
                             env={"CHAIN_SRC": src, "CHAIN_DST": dst}).output.strip() == "no hanging transactions"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, log.read_text()[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
