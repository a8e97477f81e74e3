"""Exactly-once through a broker crash: nothing lost, nothing doubled, no hanging transaction.

The regular suite runs one round; ``bench/broker_crash.py`` repeats it (10 rounds) for confidence.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.crash_scenario import run_once

pytestmark = pytest.mark.integration


def test_exactly_once_chain_survives_a_broker_sigkill_and_restart(tmp_path: Path) -> None:
    # Given an exactly-once chain over 20,000 keyed records on its own broker
    # When the broker is SIGKILLed mid-stream and restarted 5 s later on the same data dir
    outcome = run_once(tmp_path, records=20_000, kill_after=6_000, down=5.0)
    # Then read_committed readers get every record once, in order per key, and no partition hangs
    assert outcome.ok, (outcome.as_dict(), (tmp_path / "worker.log").read_text()[-3000:])
    assert outcome.broker_down_at < outcome.records  # the crash came mid-stream
