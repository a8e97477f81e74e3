"""Stopping fits Kubernetes: one SIGTERM stops cleanly within runtime.shutdown_timeout; a second exits at once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kstream.config import Settings
from tests.integration.kafkatools import consume, create_topics, jsons, produce, wait_until

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
APP = "tests/apps/slow_prefetch.py:topology"


def _env(settings: Settings, src: str, dst: str, tmp_path: Path) -> dict[str, str]:
    config = tmp_path / "kstream.toml"
    config.write_text("[limits.ext]\nrate = 500\nper = \"1s\"\n")
    return {**os.environ, "SLOWP_SRC": src, "SLOWP_DST": dst, "KSTREAM_CONFIG": str(config),
            "KSTREAM_BOOTSTRAP_SERVERS": settings.bootstrap_servers, "KSTREAM_NAMESPACE": settings.namespace}


def _start(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as err:
        return subprocess.Popen([sys.executable, "-m", "kstream.cli.main", "run", APP, "--log-level", "info"],
                                cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=err)


def _topics(settings: Settings, env: dict[str, str], src: str, dst: str, n: int) -> None:
    create_topics(settings.bootstrap_servers, src, dst, partitions=2)
    subprocess.run([sys.executable, "-m", "kstream.cli.main", "topics", "apply", APP], cwd=ROOT, env=env, check=True,
                   stdout=subprocess.DEVNULL)
    produce(settings.bootstrap_servers, src, [(f"k{i % 50}", i) for i in range(n)])


@pytest.mark.parametrize("signals", [1, 2], ids=["sigterm", "sigterm-twice"])
def test_sigterm_stops_within_the_budget_and_nothing_is_lost(settings: Settings, tmp_path: Path, signals: int) -> None:
    # Given a slow prefetch-20 node (1 s per message) with a rate limit, busy with 20 messages at once
    src, dst = f"{settings.namespace}.in", f"{settings.namespace}.out"
    env = _env(settings, src, dst, tmp_path)
    n = 200
    _topics(settings, env, src, dst, n)
    log = tmp_path / "worker.log"
    proc = _start(env, log)
    try:
        consume(settings.bootstrap_servers, dst, count=30, timeout=90)
        # When it gets SIGTERM (twice in a row, for the impatient)
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        if signals == 2:
            wait_until(lambda: "stopping (SIGTERM)" in log.read_text(), timeout=10, what="the first SIGTERM handled")
            proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
        took = time.monotonic() - started
        # Then one SIGTERM exits 0 within runtime.shutdown_timeout (20 s), having left its groups;
        # a second one exits at once with 128 + SIGTERM
        if signals == 1:
            assert code == 0 and took < 20.0, (code, took, log.read_text()[-2000:])
        else:
            assert code == 128 + signal.SIGTERM and took < 3.0, (code, took, log.read_text()[-2000:])
            assert "second signal: exiting at once" in log.read_text()
        # and a new worker finishes the rest: every message is delivered (at least once)
        proc = _start(env, log)
        out = consume(settings.bootstrap_servers, dst, timeout=120, until=lambda ms: set(range(n)) <= set(jsons(ms)))
        assert set(jsons(out)) >= set(range(n))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
