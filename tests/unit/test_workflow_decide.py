"""decide(): the orchestrator's rules, one event at a time, without Kafka."""

from __future__ import annotations

from typing import Any

import pytest

from kstream import Retry, Workflow
from kstream.errors import DeclarationError
from kstream.workflows.decide import Dispatch, ToTrash, decide
from kstream.workflows.state import WorkflowState, status_document


def onboarding(on_failure: str = "compensate", deadline: str | None = None) -> Workflow:
    wf = Workflow("onboarding", on_failure=on_failure, deadline=deadline)  # type: ignore[arg-type]

    @wf.step()
    def verify(inp: dict, ctx: Any) -> dict: ...

    @wf.step(after="verify", compensate="deprovision", retry=Retry(attempts=3, backoff=1, jitter=0))
    def provision(inp: dict) -> dict: ...

    @wf.step(after="verify", compensate="refund", timeout="30s")
    def billing(inp: dict) -> dict: ...

    @wf.step(after="verify", retry=Retry(attempts=2, backoff=1, jitter=0))
    def crm(inp: dict) -> None: ...

    @wf.step(after=("provision", "billing", "crm"))
    def welcome(results: dict) -> None: ...

    @wf.compensation("deprovision", retry=Retry(attempts=2, backoff=1, jitter=0))
    def deprovision(step: Any) -> None: ...

    @wf.compensation("refund")
    def refund(step: Any) -> None: ...

    wf.validate()
    return wf


class Run:
    """Feeds events to decide() and keeps the state and every command."""

    def __init__(self, wf: Workflow) -> None:
        self.wf, self.state, self.now = wf, None, 1_000_000
        self.commands: list[Any] = []

    def send(self, event: dict[str, Any], *, at: int | None = None) -> list[Any]:
        self.now = at if at is not None else self.now + 10
        state, cmds = decide(self.wf, self.state, {"id": "w1", **event}, self.now)
        self.state = state
        self.commands += cmds
        return cmds

    @property
    def s(self) -> WorkflowState:
        assert self.state is not None
        return self.state

    def seq(self, name: str) -> int:
        return self.s.steps[name].seq

    def complete(self, name: str, output: Any = None, seq: int | None = None) -> list[Any]:
        return self.send({"type": "completed", "kind": "step", "name": name, "seq": seq or self.seq(name),
                          "attempt": self.s.steps[name].attempts, "output": output})

    def fail(self, name: str, error: str = "503", permanent: bool = False) -> list[Any]:
        return self.send({"type": "attempt_failed", "kind": "step", "name": name, "seq": self.seq(name),
                          "attempt": self.s.steps[name].attempts, "error": error, "permanent": permanent})

    def comp_event(self, kind: str, comp_index: int = -1, **more: Any) -> list[Any]:
        c = self.s.compensations[comp_index]
        return self.send({"type": kind, "kind": "compensation", "name": c.name, "seq": c.seq, "attempt": c.attempts, **more})

    def fire(self, tid: str) -> list[Any]:
        return self.send({"type": "timer", "id": tid}, at=self.s.timers[tid])


def names(cmds: list[Any]) -> list[str]:
    return [c.node for c in cmds if isinstance(c, Dispatch)]


def started(wf: Workflow | None = None) -> Run:
    run = Run(wf or onboarding())
    run.send({"type": "start", "input": {"email": "a@b"}})
    return run


def through_verify(wf: Workflow | None = None) -> Run:
    run = started(wf)
    run.complete("verify", {"user": 1})
    return run


def test_start_dispatches_the_root_step_with_the_input() -> None:
    run = Run(onboarding())
    cmds = run.send({"type": "start", "input": {"email": "a@b"}})
    assert names(cmds) == ["verify"]
    assert cmds[0].payload["input"] == {"email": "a@b"} and cmds[0].payload["attempt"] == 1
    assert run.s.status == "running"


def test_a_repeated_start_changes_nothing() -> None:
    run = started()
    before = run.state
    assert run.send({"type": "start", "input": {"other": 1}}) == []
    assert run.state is before


def test_fan_out_then_join_dispatched_once_when_the_last_branch_completes() -> None:
    run = started()
    assert sorted(names(run.complete("verify", {"user": 1}))) == ["billing", "crm", "provision"]
    assert names(run.complete("provision", "acct")) == []
    assert names(run.complete("billing", "paid")) == []
    cmds = run.complete("crm", None)
    assert names(cmds) == ["welcome"]
    assert cmds[0].payload["input"] == {"provision": "acct", "billing": "paid", "crm": None}
    # a duplicate result of a branch (at-least-once step node) dispatches nothing again
    assert run.complete("crm", None, seq=run.seq("crm")) == []
    assert names(run.commands).count("welcome") == 1
    run.complete("welcome")
    assert run.s.status == "completed"


def test_results_of_another_seq_are_ignored() -> None:
    run = through_verify()
    before = run.s.steps["crm"].status
    assert run.send({"type": "completed", "kind": "step", "name": "crm", "seq": 999, "output": 1}) == []
    assert run.s.steps["crm"].status == before == "running"


def test_failed_attempts_retry_on_a_timer_and_show_in_status() -> None:
    run = through_verify()
    run.fail("provision", "503 Service Unavailable")
    assert run.s.steps["provision"].status == "retrying"
    assert "retry:provision" in run.s.timers
    # an early timer event is ignored; the due one dispatches attempt 2 with the same seq
    seq = run.seq("provision")
    assert run.send({"type": "timer", "id": "retry:provision"}) == []
    cmds = run.fire("retry:provision")
    assert names(cmds) == ["provision"] and cmds[0].payload["attempt"] == 2 and cmds[0].payload["seq"] == seq
    doc = status_document(run.s.to_dict())
    assert doc["steps"]["provision"] == {"status": "running", "attempts": 2, "error": "503 Service Unavailable"}
    run.complete("provision")
    assert run.s.steps["provision"].status == "completed" and run.s.steps["provision"].attempts == 2


def test_retries_exhausted_trash_the_command_and_compensate_in_reverse_completion_order() -> None:
    run = through_verify()
    run.complete("billing", "paid")      # done 2
    run.complete("provision", "acct")    # done 3
    run.fail("crm")
    run.fire("retry:crm")
    cmds = run.fail("crm")
    trash = [c for c in cmds if isinstance(c, ToTrash)]
    assert len(trash) == 1 and trash[0].node == "crm" and trash[0].attempts == 2
    assert run.s.status == "compensating"
    assert names(cmds) == ["deprovision"]  # provision completed last: undone first
    assert names(run.comp_event("completed")) == ["refund"]
    assert names(run.comp_event("completed")) == []
    assert run.s.status == "compensated"
    assert "welcome" not in names(run.commands)
    assert [c.step for c in run.s.compensations] == ["provision", "billing"]


def test_a_permanent_error_skips_retries() -> None:
    run = through_verify()
    run.fail("provision", "bad input", permanent=True)
    assert run.s.steps["provision"].status == "failed"
    assert run.s.status in ("compensating", "compensated")


def test_fail_fast_a_branch_completing_after_the_failure_is_compensated_too() -> None:
    run = through_verify()
    run.complete("provision", "acct")
    run.fail("crm"); run.fire("retry:crm"); run.fail("crm")  # noqa: E702
    assert names(run.commands)[-1] == "deprovision"
    # billing still runs: nothing new is dispatched, but when it completes it is undone as well
    run.comp_event("completed")
    assert run.s.status == "compensating"
    assert names(run.complete("billing", "paid")) == ["refund"]
    run.comp_event("completed")
    assert run.s.status == "compensated"


def test_a_failing_compensation_waits_for_a_replay() -> None:
    run = through_verify()
    run.complete("provision", "acct")
    run.complete("billing", "paid")
    run.fail("crm"); run.fire("retry:crm"); run.fail("crm")  # noqa: E702
    assert names(run.commands)[-1] == "refund"
    cmds = run.comp_event("attempt_failed", error="refund API down")
    assert [c.node for c in cmds if isinstance(c, ToTrash)] == ["refund"]
    assert run.s.status == "compensation_failed"
    # a replay of the trashed command (same seq) resumes the chain
    assert names(run.comp_event("completed")) == ["deprovision"]
    run.comp_event("completed")
    assert run.s.status == "compensated"


def test_step_timeout_compensates_the_step_and_ignores_the_late_result() -> None:
    run = through_verify()
    run.complete("provision", "acct")
    run.fire("timeout:billing")
    assert run.s.steps["billing"].status == "timed_out"
    assert run.s.status == "compensating"
    assert names(run.commands)[-1] == "refund"  # the timed-out step is undone first (latest)
    run.send({"type": "completed", "kind": "step", "name": "billing", "seq": run.seq("billing"), "output": "late"})
    assert run.s.steps["billing"].status == "timed_out" and run.s.steps["billing"].late
    run.comp_event("completed")
    assert names(run.commands)[-1] == "deprovision"
    run.comp_event("completed")
    # crm still runs: the workflow ends once it reports
    run.complete("crm")
    assert run.s.status == "compensated"


def test_hold_blocks_and_a_replay_continues_without_rerunning_the_others() -> None:
    run = through_verify(onboarding(on_failure="hold"))
    run.complete("provision", "acct")
    run.complete("billing", "paid")
    run.fail("crm"); run.fire("retry:crm")  # noqa: E702
    cmds = run.fail("crm")
    assert [c.node for c in cmds if isinstance(c, ToTrash)] == ["crm"]
    assert run.s.status == "blocked"
    trashed = next(c for c in cmds if isinstance(c, ToTrash)).payload
    # the replayed command (same seq) completes: the workflow goes on to welcome only
    cmds = run.send({"type": "completed", "kind": "step", "name": "crm", "seq": trashed["seq"], "output": None})
    assert names(cmds) == ["welcome"]
    assert names(run.commands).count("provision") == 1 and names(run.commands).count("billing") == 1


def test_hold_a_replay_that_fails_again_goes_back_to_the_trash() -> None:
    run = through_verify(onboarding(on_failure="hold"))
    run.fail("crm"); run.fire("retry:crm"); run.fail("crm")  # noqa: E702
    cmds = run.send({"type": "attempt_failed", "kind": "step", "name": "crm", "seq": run.seq("crm"), "attempt": 1, "error": "x"})
    assert [c.node for c in cmds if isinstance(c, ToTrash)] == ["crm"]
    assert run.s.status == "blocked"


def test_retry_command_reruns_failed_steps_of_a_blocked_workflow() -> None:
    run = through_verify(onboarding(on_failure="hold"))
    run.fail("crm"); run.fire("retry:crm"); run.fail("crm")  # noqa: E702
    old = run.seq("crm")
    cmds = run.send({"type": "retry"})
    assert names(cmds) == ["crm"] and cmds[0].payload["seq"] > old and cmds[0].payload["attempt"] == 1
    assert run.s.status == "running"


def test_cancel_in_the_parallel_phase_compensates_completed_steps() -> None:
    run = through_verify()
    run.complete("provision", "acct")
    cmds = run.send({"type": "cancel"})
    assert names(cmds) == ["deprovision"]
    assert run.complete("crm") == []  # nothing new dispatched after a cancel
    run.comp_event("completed")
    assert names(run.complete("billing", "paid")) == ["refund"]
    run.comp_event("completed")
    assert run.s.status == "cancelled"
    assert "welcome" not in names(run.commands)


def test_pause_holds_dispatch_until_resume() -> None:
    run = started()
    run.send({"type": "pause"})
    assert run.complete("verify", {"u": 1}) == []
    assert run.s.status == "paused"
    assert sorted(names(run.send({"type": "resume"}))) == ["billing", "crm", "provision"]


def test_a_step_waits_for_its_signal() -> None:
    wf = Workflow("approval")

    @wf.step()
    def ask(inp: dict) -> dict: ...

    @wf.step(after="ask", signal="approved")
    def act(inp: dict, ctx: Any) -> None: ...

    run = started(wf)
    assert run.complete("ask", {"x": 1}) == []
    cmds = run.send({"type": "signal", "name": "approved", "data": {"by": "ann"}})
    assert names(cmds) == ["act"] and cmds[0].payload["signal"] == {"by": "ann"}


def test_deadline_times_the_workflow_out_after_compensating() -> None:
    run = through_verify(onboarding(deadline="1h"))
    run.complete("provision", "acct")
    assert run.s.timers["deadline"] == run.s.started + 3_600_000
    assert names(run.fire("deadline")) == ["deprovision"]
    run.comp_event("completed")
    run.complete("billing", "paid"); run.comp_event("completed"); run.complete("crm")  # noqa: E702
    assert run.s.status == "timed_out"


def test_state_round_trips_through_json() -> None:
    run = through_verify()
    run.fail("provision")
    again = WorkflowState.from_dict(run.s.to_dict())
    assert again == run.s


def test_unknown_workflow_events_are_ignored() -> None:
    assert decide(onboarding(), None, {"type": "cancel", "id": "x"}, 1) == (None, [])


@pytest.mark.parametrize(("declare", "message"), [
    (lambda wf: wf.step("s", after="nope")(lambda i: i), "step 's': after='nope' names no step"),
    (lambda wf: wf.step("s", compensate="undo")(lambda i: i), "step 's': compensate='undo' names no compensation"),
])
def test_declaration_errors_name_the_step(declare: Any, message: str) -> None:
    wf = Workflow("w")
    declare(wf)
    with pytest.raises(DeclarationError, match=message):
        wf.validate()


def test_a_cycle_and_a_duplicate_name_the_step() -> None:
    wf = Workflow("w")
    wf.step("a", after="b")(lambda i: i)
    wf.step("b", after="a")(lambda i: i)
    with pytest.raises(DeclarationError, match="step 'a' is part of a cycle"):
        wf.validate()
    with pytest.raises(DeclarationError, match="step 'a' is declared twice"):
        wf.step("a")(lambda i: i)
    with pytest.raises(DeclarationError, match="step 'c': the handler takes"):
        wf.step("c")(lambda a, b, c: a)
    with pytest.raises(DeclarationError, match="step 'orchestrator': the name is reserved"):
        wf.step("orchestrator")(lambda i: i)


def test_a_step_function_is_reusable_in_another_workflow() -> None:
    first, second = onboarding(), Workflow("other")
    second.step("verify")(first.steps["verify"].fn)
    second.validate()
    assert second.steps["verify"].fn is first.steps["verify"].fn


def test_the_compiled_topology_has_an_orchestrator_and_a_node_per_step() -> None:
    topo = onboarding().topology
    assert set(topo.nodes) == {"orchestrator", "verify", "provision", "billing", "crm", "welcome", "deprovision", "refund"}
    assert topo.nodes["orchestrator"].processing == "exactly_once"
    assert topo.nodes["crm"].after == ("orchestrator",)
    assert topo.owned_topics("ns") == {"ns.wf.onboarding": {"cleanup.policy": "compact"}}


def test_graph_draws_the_steps_joins_and_compensations() -> None:
    import re

    from kstream.graph import render

    text = render(onboarding().topology, "ns")
    ids = {label.split(" ")[-1] if label.startswith("undo") else label.split(" ")[0]: ident
           for ident, label in re.findall(r'^  (s\d+)\W+"([^"]*)"', text, re.M)}
    for branch in ("provision", "billing", "crm"):
        assert f"  {ids['verify']} --> {ids[branch]}" in text
        assert f"  {ids[branch]} --> {ids['welcome']}" in text  # the join
    assert f"  {ids['provision']} -.-> {ids['deprovision']}" in text
    assert f"  {ids['billing']} -.-> {ids['refund']}" in text
    assert "orchestrator" not in text
    dot = render(onboarding().topology, "ns", "dot")
    assert dot.startswith('digraph "onboarding"') and "style=dashed" in dot


def _parent_and_child() -> tuple[Workflow, Workflow]:
    child = Workflow("kyc")
    child.step("check")(lambda inp: inp)
    parent = Workflow("signup")
    parent.step("verify")(lambda inp: inp)
    parent.call("kyc", child, after="verify")
    parent.validate()
    return parent, child


def test_a_called_workflow_reports_its_end_to_the_parent_once() -> None:
    _, child = _parent_and_child()
    link = {"reply": "ns.signup.orchestrator", "id": "p1", "step": "kyc", "seq": 2, "attempt": 1}
    state, cmds = decide(child, None, {"type": "start", "id": "p1.kyc.2", "input": {"a": 1}, "parent": link}, 1)
    assert state is not None
    state, cmds = decide(child, state, {"type": "completed", "kind": "step", "name": "check", "seq": 1, "attempt": 1,
                                        "output": {"ok": True}}, 2)
    from kstream.workflows.decide import Reply

    replies = [c for c in cmds if isinstance(c, Reply)]
    assert state is not None and state.status == "completed"
    assert replies == [Reply("ns.signup.orchestrator", "p1", {"kind": "step", "name": "kyc", "seq": 2, "attempt": 1,
                                                               "type": "completed", "output": {"ok": True}})]
    # a late duplicate changes nothing and reports nothing again
    _, again = decide(child, state, {"type": "completed", "kind": "step", "name": "check", "seq": 1, "output": 1}, 3)
    assert again == []


def test_a_called_workflow_that_fails_fails_the_parent_step_without_retry() -> None:
    _, child = _parent_and_child()
    link = {"reply": "r", "id": "p1", "step": "kyc", "seq": 2}
    state, _ = decide(child, None, {"type": "start", "id": "c", "input": 1, "parent": link}, 1)
    _, cmds = decide(child, state, {"type": "attempt_failed", "kind": "step", "name": "check", "seq": 1, "attempt": 1,
                                    "error": "no", "permanent": True}, 2)
    reply = cmds[-1]
    assert reply.event["type"] == "attempt_failed" and reply.event["permanent"] is True  # type: ignore[union-attr]
    assert "ended compensated" in reply.event["error"]  # type: ignore[union-attr]


def test_call_declaration_errors() -> None:
    wf = Workflow("w")
    with pytest.raises(DeclarationError, match="a workflow cannot call itself"):
        wf.call("me", wf)
    parent, _ = _parent_and_child()
    assert parent.topology.nodes["kyc"].after == ("orchestrator",)


def test_discarding_the_held_step_compensates_and_a_discarded_compensation_is_skipped() -> None:
    run = through_verify(onboarding(on_failure="hold"))
    run.complete("provision", "acct")
    run.complete("billing", "paid")
    run.fail("crm"); run.fire("retry:crm")  # noqa: E702
    trashed = next(c for c in run.fail("crm") if isinstance(c, ToTrash)).payload
    assert run.s.status == "blocked"
    # a discard of another seq changes nothing; of the trashed command: compensation starts
    assert run.send({"type": "discarded", "command": {**trashed, "seq": 999}}) == [] and run.s.status == "blocked"
    cmds = run.send({"type": "discarded", "command": trashed})
    assert run.s.status == "compensating" and names(cmds) == ["refund"]
    failed = next(c for c in run.comp_event("attempt_failed", error="down") if isinstance(c, ToTrash)).payload
    assert run.s.status == "compensation_failed"
    assert names(run.send({"type": "discarded", "command": failed})) == ["deprovision"]
    run.comp_event("completed")
    assert run.s.status == "compensated"
    assert [(c.name, c.status) for c in run.s.compensations] == [("refund", "discarded"), ("deprovision", "completed")]


def test_reloading_the_states_keeps_decisions_newer_than_the_committed_ones() -> None:
    # Given an orchestrator whose latest decision on a workflow is in its open transaction (v3),
    # while the state topic holds the committed v2 of it and v1 of a workflow decided elsewhere
    import threading

    from kstream.codecs import to_json
    from kstream.workflows.engine import Orchestrator
    from tests.unit.fakes import FakeRecord

    wf = onboarding()
    def state(wid: str, status: str, version: int) -> WorkflowState:
        return WorkflowState(id=wid, type="onboarding", status=status, input={}, started=0, updated=0, steps={},
                             version=version)

    def record(s: WorkflowState, offset: int) -> FakeRecord:
        return FakeRecord(key_=s.id.encode(), value_=to_json({**s.to_dict(), "partition": 0}).encode(), offset_=offset)

    mine = state("w1", "running", 3)
    committed = [record(state("w1", "running", 2), 0), record(state("w2", "completed", 1), 1)]

    class Reader:
        def read_compacted(self, topic: str, timeout: float) -> list[FakeRecord]:
            return committed

    orch = Orchestrator(wf, namespace="ns", trash_topic="ns.trash", reader=Reader(),  # type: ignore[arg-type]
                        producer=lambda: None, stop=threading.Event())  # type: ignore[arg-type,return-value]
    orch.states["w1"] = mine
    # When an inbox offset gap (a transaction marker) makes it read the partition's states again
    orch._load(0)
    # Then its own newer decision stays, and the state decided elsewhere is taken
    assert orch.states["w1"] is mine
    assert orch.states["w2"].status == "completed" and orch.states["w2"].version == 1
