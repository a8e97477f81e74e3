"""Workflows on the real broker: joins, retries, compensations, timeouts, cancel, hold + replay."""

from __future__ import annotations

from typing import Any

import pytest

from kstream.app import trash_store
from kstream.config import Settings
from kstream.trash_store import Selection
from tests.apps.onboarding_wf import Services, make
from tests.integration.kafkatools import provision, running, wait_until
from tests.integration.wftools import command, start, wait_states

pytestmark = pytest.mark.integration

BRANCHES = ("provision", "billing", "crm")


def test_branches_overlap_and_the_join_runs_once_with_durations(settings: Settings) -> None:
    # Given branches that each take 0.5 s
    services = Services(delay={b: 0.5 for b in BRANCHES})
    wf = make(services)
    provision(wf.topology, settings)
    with running(wf.topology, settings):
        # When a workflow runs
        start(settings, wf, ["w1"])
        done = wait_states(settings, wf, ["w1"], {"completed"})["w1"]
    # Then the three branches ran at the same time, welcome once after all of them
    calls = {c.step: c for c in services.calls}
    assert max(calls[b].start for b in BRANCHES) < min(calls[b].end for b in BRANCHES), "branches did not overlap"
    assert len(services.of("welcome")) == 1
    assert calls["welcome"].start >= max(calls[b].end for b in BRANCHES)
    assert done["output"] == "welcome w1@x"
    assert all(s["status"] == "completed" for s in done["steps"].values())
    assert all(c.key == f"w1:{c.step}" for c in services.calls)  # ctx.idempotency_key


def test_retries_show_attempts_then_complete_or_fail_after_the_last(settings: Settings) -> None:
    # Given crm answering 503 twice then OK
    services = Services(fail={"crm": 2})
    wf = make(services)
    provision(wf.topology, settings)
    with running(wf.topology, settings):
        start(settings, wf, ["ok"])
        ok = wait_states(settings, wf, ["ok"], {"completed"})["ok"]
        # And then crm answering 503 always
        services.fail["crm"] = -1
        start(settings, wf, ["bad"])
        bad = wait_states(settings, wf, ["bad"], {"compensated"})["bad"]
    assert ok["steps"]["crm"]["attempts"] == 3 and ok["steps"]["crm"]["status"] == "completed"
    assert bad["steps"]["crm"]["status"] == "failed"
    assert bad["steps"]["crm"]["attempts"] == 3
    assert "503" in bad["steps"]["crm"]["error"]
    assert len([c for c in services.of("crm") if c.key == "bad:crm"]) == 3


def test_a_failed_branch_compensates_in_reverse_order_and_welcome_never_runs(settings: Settings) -> None:
    # Given crm failing for good (after 3 attempts of 1 s), provision finishing before billing
    services = Services(fail={"crm": -1}, delay={"billing": 0.2, "crm": 1.0})
    wf = make(services)
    provision(wf.topology, settings)
    with running(wf.topology, settings):
        start(settings, wf, ["w1"])
        state = wait_states(settings, wf, ["w1"], {"compensated"})["w1"]
    # Then each compensation ran once, the last completed step (billing) undone first
    assert [c.step for c in services.calls if c.step in ("refund", "deprovision")] == ["refund", "deprovision"]
    assert [c["step"] for c in state["compensations"]] == ["billing", "provision"]
    assert services.of("welcome") == []
    assert state["steps"]["welcome"]["status"] == "skipped"


def test_a_failing_refund_waits_in_the_trash_and_a_replay_finishes_the_compensation(settings: Settings) -> None:
    # Given crm failing for good and refund failing twice (its 2 attempts)
    services = Services(fail={"crm": -1, "refund": 2})
    wf = make(services)
    provision(wf.topology, settings)
    with running(wf.topology, settings):
        start(settings, wf, ["w1"])
        state = wait_states(settings, wf, ["w1"], {"compensation_failed"})["w1"]
        assert {c["name"]: c["status"] for c in state["compensations"]}["refund"] == "failed"
        # When the operator replays the refund from the Trash
        store = trash_store(settings)
        wait_until(lambda: any(e.node == "refund" for e in store.entries()), timeout=30, what="refund in the Trash")
        entries = [e for e in store.entries() if e.node == "refund"]
        store.replay(Selection(ids=tuple(e.id for e in entries)))
        state = wait_states(settings, wf, ["w1"], {"compensated"})["w1"]
    # Then the chain resumed and finished: each compensation completed, each once
    assert sorted((c["name"], c["status"]) for c in state["compensations"]) == [("deprovision", "completed"),
                                                                               ("refund", "completed")]
    assert len(services.of("deprovision")) == 1 and len(services.of("refund")) == 3


def test_a_step_timeout_ignores_the_late_result_and_compensates_the_step(settings: Settings) -> None:
    # Given billing taking 3 s with a timeout of 1 s
    services = Services(delay={"billing": 3.0})
    wf = make(services, timeout=1.0)
    provision(wf.topology, settings)
    with running(wf.topology, settings):
        start(settings, wf, ["w1"])
        wait_states(settings, wf, ["w1"], {"compensated"}, timeout=60)
        # the late result arrives and is recorded, nothing else
        wait_until(lambda: len(services.of("billing")) == 1, timeout=30, what="billing to finish late")
        state = wait_states(settings, wf, ["w1"], {"compensated"})["w1"]
        wait_until(lambda: wait_states(settings, wf, ["w1"], {"compensated"})["w1"]["steps"]["billing"].get("late", False),
                   timeout=30, what="the late result recorded")
    assert state["steps"]["billing"]["status"] == "timed_out"
    assert "refund" in [c["name"] for c in state["compensations"]]
    assert services.of("welcome") == []


def test_cancel_in_the_parallel_phase_compensates_what_completed(settings: Settings) -> None:
    # Given crm slow (3 s), provision and billing fast
    services = Services(delay={"crm": 3.0})
    wf = make(services)
    provision(wf.topology, settings)
    with running(wf.topology, settings):
        start(settings, wf, ["w1"])
        wait_until(lambda: len(services.of("provision")) == 1 and len(services.of("billing")) == 1, timeout=30,
                   what="the fast branches")
        # When the workflow is cancelled while crm still runs
        command(settings, wf, "w1", {"type": "cancel"})
        state = wait_states(settings, wf, ["w1"], {"cancelled"})["w1"]
    # Then nothing new ran, both completed branches were undone
    assert services.of("welcome") == []
    assert sorted(c["step"] for c in state["compensations"]) == ["billing", "provision"]


def test_hold_blocks_and_a_trash_replay_finishes_without_rerunning_the_others(settings: Settings) -> None:
    # Given crm failing its 3 attempts in hold mode
    services = Services(fail={"crm": 3})
    wf = make(services, on_failure="hold")
    provision(wf.topology, settings)
    with running(wf.topology, settings):
        start(settings, wf, ["w1"])
        state = wait_states(settings, wf, ["w1"], {"blocked"})["w1"]
        assert state["steps"]["crm"]["status"] == "failed"
        # When the failed crm call is replayed from the Trash (the service is fine again)
        store = trash_store(settings)
        wait_until(lambda: any(e.node == "crm" for e in store.entries()), timeout=30, what="crm in the Trash")
        store.replay(Selection(ids=tuple(e.id for e in store.entries() if e.node == "crm")))
        state = wait_states(settings, wf, ["w1"], {"completed"})["w1"]
    # Then the workflow finished; verify, provision and billing ran once
    assert [len(services.of(s)) for s in ("verify", "provision", "billing", "welcome")] == [1, 1, 1, 1]
    assert len(services.of("crm")) == 4


def test_a_workflow_runs_another_as_a_step(settings: Settings) -> None:
    # Given a kyc workflow called as a step of signup (undone by "forget" if signup fails later)
    from kstream import Retry, Workflow

    calls: list[str] = []
    kyc = Workflow("kyc")

    @kyc.step(retry=Retry(attempts=2, backoff=0.05, jitter=0))
    def check(person: dict) -> dict:
        calls.append(f"check {person['name']}")
        if person["name"] == "mallory":
            raise RuntimeError("sanctioned")
        return {"cleared": person["name"]}

    signup = Workflow("signup")

    @signup.step()
    def verify(data: dict) -> dict:
        return {"name": data["name"]}

    signup.call("kyc", kyc, after="verify", compensate="forget")

    @signup.step(after="kyc")
    def activate(cleared: dict) -> str:
        return f"active {cleared['cleared']}"

    @signup.compensation("forget")
    def forget(step: Any) -> None:
        calls.append("forget")

    for wf in (kyc, signup):
        provision(wf.topology, settings)
    with running(kyc.topology, settings), running(signup.topology, settings):
        # When one signup passes kyc and one does not
        start(settings, signup, ["alice"], {"name": "alice"})
        start(settings, signup, ["mallory"], {"name": "mallory"})
        done = wait_states(settings, signup, ["alice", "mallory"], {"completed", "compensated"})
    # Then the first completes with the child's output, the second fails at the kyc step
    assert done["alice"]["status"] == "completed" and done["alice"]["output"] == "active alice"
    assert done["mallory"]["status"] == "compensated"
    assert "workflow kyc mallory.kyc.2 ended compensated" in done["mallory"]["steps"]["kyc"]["error"]
    assert calls.count("check alice") == 1 and calls.count("check mallory") == 2
    children = wait_states(settings, kyc, ["alice.kyc.2", "mallory.kyc.2"], {"completed", "compensated"})
    assert children["alice.kyc.2"]["output"] == {"cleared": "alice"}


def test_hold_discarding_the_failed_step_compensates_and_a_discarded_compensation_is_skipped(settings: Settings) -> None:
    # Given crm failing its 3 attempts in hold mode, and refund failing its 2
    services = Services(fail={"crm": 3, "refund": 2}, delay={"crm": 0.3})
    wf = make(services, on_failure="hold")
    provision(wf.topology, settings)
    store = trash_store(settings)

    def discard(node: str) -> None:
        wait_until(lambda: any(e.node == node for e in store.entries()), timeout=30, what=f"{node} in the Trash")
        store.discard(Selection(ids=tuple(e.id for e in store.entries() if e.node == node)))

    with running(wf.topology, settings):
        start(settings, wf, ["w1"])
        wait_states(settings, wf, ["w1"], {"blocked"})
        # When the operator discards the failed crm call: the workflow compensates instead
        discard("crm")
        state = wait_states(settings, wf, ["w1"], {"compensation_failed", "compensated"})["w1"]
        assert state["status"] == "compensation_failed"
        # And when the failing refund is discarded too, the chain goes on without it
        discard("refund")
        state = wait_states(settings, wf, ["w1"], {"compensated"})["w1"]
    assert sorted((c["name"], c["status"]) for c in state["compensations"]) == [("deprovision", "completed"),
                                                                               ("refund", "discarded")]
    assert services.of("welcome") == [] and len(services.of("deprovision")) == 1
