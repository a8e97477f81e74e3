"""Contender processes: ``kstream run`` of a benchmark app, and peer venvs built from PyPI."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.paths import BENCH_DIR, REPO
from bench.procstats import ProcessContender


def peer_venv(name: str, requirements: Sequence[str]) -> Path:
    """``bench/.venv-<name>`` with ``requirements`` from PyPI, created on first use; its python.

    A stamp file records what was installed: a venv whose stamp differs is rebuilt.
    """
    venv = BENCH_DIR / f".venv-{name}"
    python = venv / "bin" / "python"
    stamp = venv / ".bench-installed"
    wanted = " ".join(requirements)
    if python.exists() and stamp.exists() and stamp.read_text().strip() == wanted:
        return python
    print(f"creating {venv} with {wanted} (first use) ...", flush=True)
    shutil.rmtree(venv, ignore_errors=True)
    base = shutil.which("python3") or sys.executable
    subprocess.run([base, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--upgrade", "pip"], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", *requirements], check=True)
    stamp.write_text(wanted + "\n")
    return python


def provision_topology(topology: Any, bootstrap: str, namespace: str, partitions: int) -> list[str]:
    """Create the node input topics of ``topology`` (and any ``to=`` topics); returns their names."""
    from kstream.app import admin
    from kstream.config import load_settings
    from kstream.provision import apply, plan

    settings = load_settings(environ={}, overrides={"bootstrap_servers": bootstrap, "namespace": namespace,
                                                    "topics": {"partitions": partitions}})
    client = admin(settings)
    apply(plan(topology, settings, client, create_external=True), client)
    names = {n.input_topic(namespace) for n in topology.nodes.values()} | {t for n in topology.nodes.values() for t in n.to}
    return sorted(names)


def runtime_config(path: Path, runtime: dict[str, Any]) -> Path:
    """Write ``runtime`` (numbers, strings) to ``path`` as a config file's ``[runtime]`` table."""
    path.write_text("[runtime]\n" + "".join(f"{k} = {v!r}\n" for k, v in runtime.items()))
    return path


def kstream_run(name: str, app: str, *, bootstrap: str, namespace: str, env: dict[str, str] | None = None,
                kafka: dict[str, str] | None = None, config: Path | None = None,
                python: Path | None = None) -> ProcessContender:
    """A ``kstream run APP`` subprocess (all the app's nodes) from the project's venv, or from the
    venv of ``python`` (kstream installed there too, e.g. on another confluent-kafka)."""
    exe = Path(python or sys.executable).parent / "kstream"
    argv = [str(exe)]
    if config is not None:
        argv += ["--config", str(config)]
    argv += ["-b", bootstrap, "-n", namespace]
    for k, v in (kafka or {}).items():
        argv += ["-X", f"{k}={v}"]
    # `kstream run` refuses to start without every topic it reads (a replay topic, for one):
    # whatever the benchmark did not create itself is created as `topics apply` would.
    subprocess.run([*argv, "topics", "apply", app, "--create-external"], env={**os.environ, **(env or {})},
                   cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    argv += ["run", app, "--log-level", "warning"]
    return ProcessContender(name, argv, env=env, stop_signal=15)
