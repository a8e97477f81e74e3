"""Exactly-once through a broker crash: nothing lost, nothing doubled, no hanging transaction.

The regular suite runs one round of each feed (a backlog, a stream); ``bench/broker_crash.py``
repeats them (10 rounds) for confidence.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.crash_scenario import run_once

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("rate", [0.0, 1500.0], ids=["backlog", "stream"])
def test_exactly_once_chain_survives_a_broker_sigkill_and_restart(tmp_path: Path, rate: float) -> None:
    # Given an exactly-once chain with default settings over 20,000 keyed records on its own
    # broker: written before it starts (a backlog: full-length transactions), or fed at 1,500
    # a second (a stream: the workers find no input waiting and commit early, every ~20 ms)
    # When the broker is SIGKILLed mid-stream and restarted 5 s later on the same data dir
    outcome = run_once(tmp_path, records=20_000, kill_after=6_000, down=5.0, rate=rate)
    # Then read_committed readers get every record once, in order per key, and no partition hangs
    assert outcome.ok, (outcome.as_dict(), (tmp_path / "worker.log").read_text()[-3000:])
    assert outcome.broker_down_at < outcome.records  # the crash came mid-stream
    assert outcome.worker_restarts == 0  # the worker replaced its producer in place


@pytest.mark.parametrize("exactly_once", [False, True], ids=["at-least-once", "exactly-once"])
def test_workers_ride_out_a_40_s_broker_outage_without_exiting(tmp_path: Path, exactly_once: bool) -> None:
    # Given the chain over 10,000 keyed records on its own broker
    # When the broker is SIGKILLed mid-stream and comes back 40 s later on the same data dir
    outcome = run_once(tmp_path, records=10_000, kill_after=3_000, down=40.0, exactly_once=exactly_once)
    # Then nothing is lost (nor duplicated, exactly-once), per-key order holds, and the worker
    # process never exited: it waited for the cluster and went on
    assert outcome.ok, (outcome.as_dict(), (tmp_path / "worker.log").read_text()[-3000:])
    assert outcome.worker_restarts == 0, (tmp_path / "worker.log").read_text()[-3000:]
    # and said so without flooding its log: each client's error once per change of state (and
    # librdkafka's own lines at most once a minute), not a line per reconnect attempt
    text = (tmp_path / "worker.log").read_text()
    assert "brokers are down" in text
    assert text.count("Connection refused") <= 80, text.count("Connection refused")
