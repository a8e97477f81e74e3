"""Workflows at scale on the real broker: 1,000 joins that never fire early, and the SIGKILL of
the orchestrator during a fan-out of 200 workflows."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from kstream.config import Settings
from kstream.naming import node_topic
from tests.apps.onboarding_wf import Services, make
from tests.integration.kafkatools import consume, jsons, provision, running, wait_until
from tests.integration.wftools import start, states, wait_states

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
BRANCHES = ("provision", "billing", "crm")
STEPS = ("verify", *BRANCHES, "welcome")


def test_a_thousand_joins_fire_once_each_and_never_before_the_slowest_branch(settings: Settings) -> None:
    # Given branches that each take a random 0-50 ms
    rng = random.Random(7)
    services = Services(delay={b: (lambda wid: rng.uniform(0, 0.05)) for b in BRANCHES})
    wf = make(services)
    provision(wf.topology, settings)
    ids = [f"w{i}" for i in range(1000)]
    with running(wf.topology, settings):
        # When 1,000 workflows start at once
        start(settings, wf, ids)
        wait_states(settings, wf, ids, {"completed"}, timeout=240)
    # Then welcome ran exactly once per workflow, each time after the last of its branches ended
    welcome = services.of("welcome")
    assert Counter(c.key for c in welcome) == Counter(f"{w}:welcome" for w in ids)
    ends: dict[str, float] = {}
    for c in services.calls:
        if c.step in BRANCHES:
            wid = c.key.split(":")[0]
            ends[wid] = max(ends.get(wid, 0.0), c.end)
    early = [c.key for c in welcome if c.start < ends[c.key.split(":")[0]]]
    assert early == []


def _orchestrator(settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "KSTREAM_BOOTSTRAP_SERVERS": settings.bootstrap_servers, "KSTREAM_NAMESPACE": settings.namespace}
    with log.open("ab") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "kstream.cli.main", "run", "tests/apps/onboarding_wf.py:workflow", "--node", "orchestrator",
             "--log-level", "warning"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=err)


def test_sigkill_of_the_orchestrator_during_a_fan_out_loses_and_repeats_nothing(settings: Settings, tmp_path: Path) -> None:
    # Given the step nodes in this process (branches 0-200 ms) and the orchestrator in its own
    rng = random.Random(3)
    services = Services(delay={b: (lambda wid: rng.uniform(0, 0.2)) for b in BRANCHES})
    wf = make(services)
    provision(wf.topology, settings)
    ids = [f"w{i}" for i in range(200)]
    log = tmp_path / "orchestrator.log"
    steps = [n for n in wf.topology.order() if n != "orchestrator"]
    proc = _orchestrator(settings, log)
    try:
        with running(wf.topology, settings, nodes=steps):
            start(settings, wf, ids)
            # When it is killed while the fan-out is under way
            wait_until(lambda: len(services.of("provision")) >= 40, timeout=120, what="the fan-out to begin")
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            done_before = sum(1 for s in states(settings, wf).values() if s["status"] == "completed")
            proc = _orchestrator(settings, log)
            # Then every workflow completes
            wait_states(settings, wf, ids, {"completed"}, timeout=240)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, log.read_text()[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert done_before < len(ids), "the kill came too late to test anything"
    # And each step of each workflow was dispatched once (committed) and its side effect happened once
    for step in STEPS:
        commands = jsons(consume(settings.bootstrap_servers, node_topic(settings.namespace, wf.name, step),
                                 count=len(ids), timeout=30, committed=True, settle=1.0))
        assert Counter(c["workflow"] for c in commands) == Counter(ids), f"{step} dispatched other than once"
        assert Counter(c.key for c in services.of(step)) == Counter(f"{w}:{step}" for w in ids), step


def test_orchestrator_partitions_moving_between_two_processes_repeat_nothing(settings: Settings) -> None:
    # Given the steps and one orchestrator (A) running, 150 workflows with 0-300 ms branches
    rng = random.Random(5)
    services = Services(delay={b: (lambda wid: rng.uniform(0, 0.3)) for b in BRANCHES})
    wf = make(services)
    provision(wf.topology, settings)
    ids = [f"w{i}" for i in range(150)]
    steps = [n for n in wf.topology.order() if n != "orchestrator"]
    with running(wf.topology, settings, nodes=steps):
        a = running(make(services).topology, settings, nodes=["orchestrator"])
        a.__enter__()
        try:
            start(settings, wf, ids)
            wait_until(lambda: len(services.of("provision")) >= 30, timeout=120, what="the first branches")
            # When a second orchestrator (B) joins (partitions move to it) and then A leaves
            # (they move back): each side reloads the states of partitions decided elsewhere
            with running(make(services).topology, settings, nodes=["orchestrator"]):
                wait_until(lambda: len(services.of("welcome")) >= 30, timeout=120, what="progress with two orchestrators")
                a.__exit__(None, None, None)
                a = None
                wait_states(settings, wf, ids, {"completed"}, timeout=240)
        finally:
            if a is not None:
                a.__exit__(None, None, None)
    # Then every step of every workflow was dispatched and run once
    for step in STEPS:
        commands = jsons(consume(settings.bootstrap_servers, node_topic(settings.namespace, wf.name, step),
                                 count=len(ids), timeout=30, committed=True, settle=1.0))
        assert Counter(c["workflow"] for c in commands) == Counter(ids), f"{step} dispatched other than once"
        assert Counter(c.key for c in services.of(step)) == Counter(f"{w}:{step}" for w in ids), step
