"""The pure pieces of honest benchmark figures: dirty-tree refusal, provenance and digests, verdicts
with their spread, and the README/REPORT text generated from the committed results."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from bench import report
from bench.harness import BenchError
from bench.paths import RESULTS_DIR
from bench.results import (
    ALLOW_DIRTY_ENV,
    DirtyTree,
    check_tree,
    tree_state,
    verdict,
    verdict_text,
    verify_digest,
    write_json,
)

# Results files written before write_json recorded a digest; a benchmark re-run replaces them.
LEGACY = {"broker_crash", "broker_crash_baseline", "compacted", "eos", "latency", "observe-cost", "passthrough",
          "passthrough-observe", "prefetch", "ratelimit", "workflows"}


def _repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    (repo / "bench" / "results").mkdir(parents=True)
    (repo / "code.py").write_text("x = 1\n")
    (repo / "bench" / "results" / "old.json").write_text("{}\n")
    for args in (["init", "-q"], ["add", "-A"], ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "c"]):
        subprocess.run(["git", *args], cwd=repo, check=True)
    return repo


def test_a_dirty_tree_is_refused_with_exit_status_2_unless_allowed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo = _repo(tmp_path)
    assert check_tree(False, repo).dirty is False
    # Given a changed file and an untracked one
    (repo / "code.py").write_text("x = 2\n")
    (repo / "new.py").write_text("")
    # Then the run is refused with one line naming them
    with pytest.raises(DirtyTree) as refused:
        check_tree(False, repo)
    assert refused.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "code.py" in err and "new.py" in err and "--allow-dirty" in err
    # And with --allow-dirty it runs, marked dirty
    allowed = check_tree(True, repo)
    assert allowed.dirty and len(allowed.dirty_files) == 2


def test_what_a_benchmark_writes_under_bench_results_does_not_make_the_tree_dirty(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    (repo / "bench" / "results" / "old.json").write_text('{"new": 1}\n')
    (repo / "bench" / "results" / "new.json").write_text("{}\n")
    state = tree_state(repo)
    assert not state.dirty
    assert state.commit is not None and len(state.commit) == 40


def test_results_record_provenance_and_a_digest_that_catches_a_hand_edit(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    (repo / "code.py").write_text("x = 3\n")
    tree = check_tree(True, repo)
    path = write_json("fig", {"median": {1000000: 1.5, 200000: 2.0}, "rounds": [1, 2]}, tree=tree, results_dir=tmp_path)
    data = json.loads(path.read_text())
    assert data["provenance"]["commit"] == tree.commit
    assert data["provenance"]["dirty"] is True and data["provenance"]["dirty_files"] == [" M code.py"]
    assert verify_digest(path) is True
    # When a figure is changed by hand, the digest no longer matches
    data["median"]["1000000"] = 9.9
    path.write_text(json.dumps(data, indent=2))
    assert verify_digest(path) is False


def test_without_a_tree_state_write_json_refuses_a_dirty_tree_unless_the_environment_allows(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import bench.results as results

    repo = _repo(tmp_path)
    (repo / "code.py").write_text("x = 4\n")
    monkeypatch.setattr(results, "tree_state", lambda repo_=repo: tree_state(repo))
    monkeypatch.delenv(ALLOW_DIRTY_ENV, raising=False)
    with pytest.raises(DirtyTree):
        write_json("fig", {"a": 1}, results_dir=tmp_path)
    assert not (tmp_path / "fig.json").exists()
    monkeypatch.setenv(ALLOW_DIRTY_ENV, "1")
    assert json.loads(write_json("fig", {"a": 1}, results_dir=tmp_path).read_text())["provenance"]["dirty"] is True


def test_a_verdict_is_met_only_when_the_median_meets_the_target_and_keeps_the_spread() -> None:
    best_round_only = verdict([0.4, 0.55, 0.9], 0.6)
    assert best_round_only["met"] is False and (best_round_only["min"], best_round_only["max"]) == (0.4, 0.9)
    one_bad_round = verdict([0.3, 0.65, 0.7], 0.6)
    assert one_bad_round["met"] is True and one_bad_round["median"] == 0.65
    assert verdict_text(one_bad_round) == "0.65 (0.30-0.70 over 3 rounds; target >= 0.6): met"
    latency = verdict([12.0, 60.0, 18.0], 20.0, at_least=False)
    assert latency["met"] is True and latency["op"] == "<="
    assert verdict_text(verdict([0.12], 0.10, at_least=False), "+.1%") == "+12.0% (1 round; target <= 10.0%): NOT met"


def test_the_generated_blocks_replace_only_what_lies_between_the_markers() -> None:
    text = f"intro\n{report.BEGIN}\nold figure\n{report.END}\noutro\n"
    assert report.splice(text, "new figure") == f"intro\n{report.BEGIN}\nnew figure\n{report.END}\noutro\n"
    with pytest.raises(SystemExit):
        report.splice("no markers here", "x")


def test_the_readme_shows_a_target_not_met_by_its_median_even_when_one_round_met_it(tmp_path: Path) -> None:
    # Given a peers result whose best round meets the target but whose median does not
    run = {"msgs_per_s": 1000.0, "cpu_s_per_100k": 1.0, "peak_rss_mb": 50.0, "all_msgs_per_s": [1000], "messages": 10}
    write_json("peers", tree=tree_state(), results_dir=tmp_path, data={
        "when": "2026-11-30", "config": {"messages": 10, "partitions": 6, "repeat": 3, "measured": "m"},
        "machine_before": {"nproc": 2, "cpu_model": "cpu", "loadavg": [1.0, 1.0, 1.0]},
        "machine_after": {"nproc": 2, "cpu_model": "cpu", "loadavg": [2.0, 1.0, 1.0]},
        "versions": {"kafka_broker": "4", "python": "3", "confluent_kafka": "2", "librdkafka": "2", "peers": {}},
        "median": {"raw": run, "kstream-alo": {**run, "msgs_per_s": 500.0}},
        "ratios": {"kstream-alo/raw": verdict([0.5, 0.55, 0.7], 0.6)},
    })  # fmt: skip
    block = report.readme_block(tmp_path)
    assert "| kstream-alo/raw | 0.55 (0.50-0.70 over 3 rounds; target >= 0.6): **NOT met** |" in block
    assert "load 1 -> 2, digest ok" in block


def test_readme_bench_readme_and_report_are_what_the_committed_results_produce() -> None:
    stale = [str(path) for path, text in report.generated().items() if path.read_text() != text]
    assert stale == [], "run `.venv/bin/python -m bench.report` and commit"


def test_every_committed_results_file_is_as_its_benchmark_wrote_it() -> None:
    edited = [p.name for p in RESULTS_DIR.glob("*.json") if verify_digest(p) is False]
    undigested = {p.stem for p in RESULTS_DIR.glob("*.json") if verify_digest(p) is None}
    assert edited == []
    assert undigested <= LEGACY, "a new results file must come from write_json"


def test_memory_growth_compares_the_floor_and_peak_of_two_windows_not_two_single_readings() -> None:
    from bench.memory import rss_window, window_growth

    # Given RSS readings of a worker whose memory swings between 85 and 110 MB at every count
    trace = [(i * 0.25, i * 10_000, 85.0 if i % 2 else 110.0) for i in range(501)]
    # (its last readings creeping up: a peak of 121 MB in the last window)
    trace[-3] = (trace[-3][0], trace[-3][1], 121.0)
    second, last = rss_window(trace, 1_000_000, 2_000_000, last=False), rss_window(trace, 4_000_000, 5_000_000, last=True)
    assert (second["floor_mb"], second["peak_mb"], second["readings"]) == (85.0, 110.0, 100)
    assert (last["floor_mb"], last["peak_mb"], last["readings"]) == (85.0, 121.0, 101)
    # Then the growth is the peak's (+10%), whatever phase of the swing a single reading caught
    g = window_growth(second, last)
    assert g["floor_growth"] == 0 and round(g["peak_growth"], 3) == 0.1 and g["growth"] == g["peak_growth"]
    # and a window without a reading is an error, not a growth of zero
    with pytest.raises(BenchError, match="no RSS reading"):
        rss_window(trace, 6_000_000, 7_000_000, last=True)


def test_a_broker_crash_file_counts_the_rounds_that_kept_every_invariant_from_the_rounds_themselves() -> None:
    round_ok = {"ok": True}
    data = {"rounds": [round_ok, {"ok": False}, round_ok], "params": {"rate": 1500.0, "transaction_early": 0.02},
            "rounds_ok": 3}  # a stale count is not what the report shows
    assert report.figures("broker_crash-early", data) == [
        "2 of 3 rounds kept every invariant (fed at 1,500/s, transaction_early 0.02)"]
    assert report.figures("broker_crash", {"rounds": [round_ok], "params": {}}) == [
        "1 of 1 rounds kept every invariant (a backlog)"]


def test_a_passthrough_file_shows_the_cpu_per_message_of_each_round_against_its_target() -> None:
    # Given two rounds where kstream used 2.4x and 1.8x the raw loop's CPU per message, and a
    # raw loop writing kstream's headers that used 2x raw in both
    runs = [{"name": "raw", "cpu_s_per_100k": 0.25}, {"name": "raw", "cpu_s_per_100k": 0.30},
            {"name": "raw-envelope", "cpu_s_per_100k": 0.50}, {"name": "raw-envelope", "cpu_s_per_100k": 0.60},
            {"name": "kstream-bytes", "cpu_s_per_100k": 0.60}, {"name": "kstream-bytes", "cpu_s_per_100k": 0.54}]
    data = {"round_ratios": {"kstream-bytes/raw": [0.8, 0.9]}, "target_ratio": 0.8, "target_cpu_ratio": 2.0,
            "cpu_ratios": {"kstream-bytes/raw": 1.0}, "runs": runs}  # a stale median is not what the report shows
    # Then the figures pair the runs of each round: the median of 2.4 and 1.8 (2.1) misses <= 2;
    # raw-envelope has no target
    assert report.figures("passthrough", data) == [
        "kstream-bytes/raw 0.85 (0.80-0.90 over 2 rounds; target >= 0.8): met",
        "CPU per message kstream-bytes/raw 2.10 (1.80-2.40 over 2 rounds; target <= 2): **NOT met**",
        "CPU per message kstream-bytes/raw-envelope 1.05 (0.90-1.20 over 2 rounds)",
    ]
    # and a run with kstream's headers in its input shows the same targets, without raw-envelope
    headers = {**data, "runs": runs[:2] + runs[4:]}
    assert report.figures("passthrough-headers", headers)[1:] == [
        "CPU per message kstream-bytes/raw 2.10 (1.80-2.40 over 2 rounds; target <= 2): **NOT met**"]
    # and a run without kstream-bytes (other contenders chosen) has no such figure
    assert report.figures("passthrough", {**data, "round_ratios": {"kstream-dict/raw": [0.7]}, "runs": runs[:2]}) == []
