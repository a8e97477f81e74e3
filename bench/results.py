"""Report pieces of the benchmarks: where a figure came from, how it is summed up, how it is written.

A figure is the output of a command on a committed tree, or it is not a figure. So:

* :func:`check_tree` at the start of a run refuses a tree with changes outside ``bench/results/``
  unless ``--allow-dirty`` (:func:`add_tree_args`) was given; the run is then marked dirty.
* :func:`write_json` records that state (commit, dirty, the changed files, the command line) in
  every results file, and a ``digest`` of the content: :func:`verify_digest` tells whether a
  file is still what the benchmark wrote (nothing edited by hand after a run).
* :func:`verdict` calls a target met only when the *median* over the rounds meets it, and keeps
  the spread (min-max over the rounds) next to it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.paths import REPO, RESULTS_DIR

if TYPE_CHECKING:
    from bench.harness import BrokerHandle, Measurement

ALLOW_DIRTY_ENV = "KSTREAM_BENCH_ALLOW_DIRTY"
"""For a benchmark without ``--allow-dirty`` of its own: ``1`` lets it write results from a dirty tree."""
RESULTS_PATHSPEC = ":(exclude)bench/results"
"""What a benchmark writes is not part of the code that ran: its results do not make the tree dirty."""


# -- the tree a run ran on ---------------------------------------------------------------------------


@dataclass(frozen=True)
class TreeState:
    commit: str | None
    dirty_files: list[str] = field(default_factory=list)
    """``git status --porcelain`` lines outside bench/results/ (untracked files included)."""

    @property
    def dirty(self) -> bool:
        return bool(self.dirty_files)


def _git(*args: str, cwd: Path = REPO) -> str | None:
    out = subprocess.run(["git", *args], capture_output=True, text=True, cwd=cwd, check=False)
    return out.stdout if out.returncode == 0 else None


def tree_state(repo: Path = REPO) -> TreeState:
    """The commit checked out in ``repo`` and what differs from it (outside bench/results/)."""
    sha = _git("rev-parse", "HEAD", cwd=repo)
    status = _git("status", "--porcelain", "--untracked-files=normal", "--", ".", RESULTS_PATHSPEC, cwd=repo) or ""
    return TreeState(sha.strip() if sha else None, [line for line in status.splitlines() if line.strip()])


def add_tree_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--allow-dirty", action="store_true",
                    help="run on a tree with uncommitted changes (the results are marked dirty)")


class DirtyTree(SystemExit):
    """A benchmark refused to run (or to write results) on a tree with uncommitted changes."""

    def __init__(self, state: TreeState) -> None:
        shown = ", ".join(line[3:] for line in state.dirty_files[:5]) + (" ..." if len(state.dirty_files) > 5 else "")
        print(f"error: the tree has uncommitted changes ({shown}): commit them, or pass --allow-dirty "
              f"(the results are then marked dirty)", file=sys.stderr)
        super().__init__(2)


def check_tree(allow_dirty: bool, repo: Path = REPO) -> TreeState:
    """The tree this run runs on; raises :class:`DirtyTree` (exit status 2) if it has changes and
    ``allow_dirty`` is false."""
    state = tree_state(repo)
    if state.dirty and not allow_dirty:
        raise DirtyTree(state)
    return state


# -- versions and the machine --------------------------------------------------------------------------


def package_versions(python: Path | str, packages: Sequence[str]) -> dict[str, str | None]:
    """Installed versions of ``packages`` in the interpreter ``python`` (None if missing)."""
    code = ("import importlib.metadata as m, json, sys\n"
            "def v(p):\n    try: return m.version(p)\n    except m.PackageNotFoundError: return None\n"
            "print(json.dumps({p: v(p) for p in sys.argv[1:]}))")
    out = subprocess.run([str(python), "-c", code, *packages], capture_output=True, text=True, check=True)
    result: dict[str, str | None] = json.loads(out.stdout)
    return result


def versions(handle: BrokerHandle | None = None) -> dict[str, Any]:
    """kstream's commit, Python, confluent-kafka / librdkafka and the broker's Kafka version."""
    from importlib.metadata import version

    import confluent_kafka

    from kstream.dev.broker import JVM_PROFILES, kafka_version

    state = tree_state()
    external = handle is not None and handle.pid is None
    kafka = "external broker (version not read)" if external else kafka_version()
    return {
        "kstream_git_sha": state.commit, "kstream_dirty": state.dirty,
        "python": platform.python_version(),
        "confluent_kafka": version("confluent-kafka"), "librdkafka": confluent_kafka.libversion()[0],
        "kafka_broker": kafka,
        "broker_jvm": None if handle is None or handle.pid is None else " ".join(JVM_PROFILES[handle.jvm or "dev"]),
    }  # fmt: skip


def machine() -> dict[str, Any]:
    """CPUs, CPU model and the load average now (1, 5, 15 minutes)."""
    model = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "cpu_model": model, "loadavg": [round(x, 2) for x in os.getloadavg()]}


# -- summing up rounds -------------------------------------------------------------------------------


def median_of(runs: Sequence[Measurement]) -> dict[str, Any]:
    """Medians of the numeric figures of repeated runs of one contender."""
    def med(values: list[float | None]) -> float | None:
        known = [v for v in values if v is not None]
        return statistics.median(known) if known else None

    return {
        "runs": len(runs),
        "msgs_per_s": med([r.msgs_per_s for r in runs]),
        "cpu_s_per_100k": med([r.cpu_s_per_100k for r in runs]),
        "broker_cpu_s_per_100k": med([r.broker_cpu_s_per_100k for r in runs]),
        "startup_s": med([r.startup_s for r in runs]),
        "all_msgs_per_s": [round(r.msgs_per_s) for r in runs],
    }


def summary(runs: Sequence[Measurement]) -> dict[str, Any]:
    """:func:`median_of` plus the median peak RSS and the messages each run covered."""
    med = median_of(runs)
    rss = [r.peak_rss_mb for r in runs if r.peak_rss_mb is not None]
    med["peak_rss_mb"] = statistics.median(rss) if rss else None
    med["messages"] = runs[0].messages if runs else None
    return med


def verdict(per_round: Sequence[float], target: float | None, *, at_least: bool = True) -> dict[str, Any]:
    """A target against the rounds of a run: met only when the median meets it; min and max kept.

    ``at_least`` is the direction: a ratio or a rate must reach the target (``>=``), a latency
    or a growth must stay under it (``<=``). ``target`` None: a figure without one (``met`` None)."""
    if not per_round:
        raise ValueError("a verdict needs at least one round")
    med = statistics.median(per_round)
    return {"median": med, "min": min(per_round), "max": max(per_round), "per_round": list(per_round),
            "rounds": len(per_round), "target": target, "op": ">=" if at_least else "<=",
            "met": None if target is None else med >= target if at_least else med <= target}


def paired_ratios(runs: Sequence[dict[str, Any]], a: str, b: str, key: str) -> list[float]:
    """``key`` of contender ``a`` over contender ``b`` within each round: the i-th run of each
    name in ``runs`` is round i (contenders of one round share the machine's conditions)."""
    xs = [r[key] for r in runs if r["name"] == a]
    ys = [r[key] for r in runs if r["name"] == b]
    return [round(x / y, 3) for x, y in zip(xs, ys, strict=True)] if xs and ys else []


def verdict_text(v: dict[str, Any], spec: str = ".2f") -> str:
    """``0.64 (0.60-0.70 over 3 rounds; target >= 0.6): met``."""
    spread = (f"{format(v['min'], spec)}-{format(v['max'], spec)} over {v['rounds']} rounds" if v["rounds"] > 1
              else "1 round")
    if v["target"] is None:  # a figure reported without a target
        return f"{format(v['median'], spec)} ({spread})"
    target = format(v["target"], spec.lstrip("+")) if spec.endswith("%") else f"{v['target']:g}"
    return (f"{format(v['median'], spec)} ({spread}; target {v['op']} {target}): "
            f"{'met' if v['met'] else 'NOT met'}")


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))) for r in rows]
    return "\n".join(out)


# -- writing results ---------------------------------------------------------------------------------


def digest(data: dict[str, Any]) -> str:
    """sha256 of ``data`` without its ``digest`` key, as canonical JSON."""
    body = {k: v for k, v in data.items() if k != "digest"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def verify_digest(path: Path) -> bool | None:
    """True if the file is what a benchmark wrote, False if it was changed since, None if it has
    no digest (written before digests existed)."""
    data = json.loads(path.read_text())
    if "digest" not in data:
        return None
    return bool(data["digest"] == digest(data))


def write_json(name: str, data: dict[str, Any], *, tree: TreeState | None = None,
               results_dir: Path = RESULTS_DIR) -> Path:
    """Write ``results_dir/<name>.json`` with its provenance and digest.

    ``tree`` is what :func:`check_tree` returned at the start of the run. Without it the tree is
    read now, and a dirty one is refused (:class:`DirtyTree`) unless ``$KSTREAM_BENCH_ALLOW_DIRTY``
    is ``1``: a benchmark that has no ``--allow-dirty`` yet still cannot write unmarked figures.
    """
    if tree is None:
        tree = tree_state()
        if tree.dirty and os.environ.get(ALLOW_DIRTY_ENV) != "1":
            raise DirtyTree(tree)
    out = {**data, "provenance": {
        "commit": tree.commit, "dirty": tree.dirty, "dirty_files": tree.dirty_files,
        "command": [Path(sys.argv[0]).name, *sys.argv[1:]], "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }}  # fmt: skip
    out = json.loads(json.dumps(out))  # the digest is of what a reader gets back (int keys become strings)
    out["digest"] = digest(out)
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"{name}.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    return path
