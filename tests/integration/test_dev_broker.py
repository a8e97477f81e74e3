"""`kstream dev broker` against a real Kafka: one fresh start and one restart in a temporary workdir."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from kstream.cli.dev import dev
from kstream.dev.broker import (
    CONSOLE_CONSUMER,
    CONSOLE_PRODUCER,
    CONSUMER_GROUP_COMMAND,
    STORAGE_TOOL,
    TOPIC_COMMAND,
    LocalBroker,
    java_tool,
)

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def workdir(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "broker"
    yield path
    LocalBroker(path).stop(timeout=10)  # whatever a failed assertion left running


def _cli(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(dev, ["broker", *args], env=env)


def _cli_process(*args: str, path: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": path} if path is not None else None
    return subprocess.run(
        [sys.executable, "-m", "kstream.cli.dev", "broker", *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except OSError:
        return False
    return True


def _topics(libs: Path, bootstrap: str) -> list[str]:
    argv = java_tool(libs, TOPIC_COMMAND, "--bootstrap-server", bootstrap, "--list")
    listed = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=True)
    return listed.stdout.split()


def test_start_status_logs_stop_and_restart_keeps_topics(workdir: Path) -> None:
    # Given a free port (never 9092: a developer's own broker may be there)
    port = _free_port()
    wd = str(workdir)

    # When the broker starts
    started = _cli("start", "--port", str(port), "--workdir", wd)

    # Then it prints its version and address, and the port takes connections
    assert started.exit_code == 0, started.output
    match = re.fullmatch(r"kafka \d+\.\d+\.\d+ running at 127\.0\.0\.1:(\d+) \(pid (\d+)\)\n", started.stdout)
    assert match, started.output
    assert int(match[1]) == port
    assert _accepts(port)
    pid = match[2]
    cluster_id = json.loads((workdir / "state.json").read_text())["cluster_id"]

    # And starting again is a no-op that says so
    again = _cli("start", "--workdir", wd)
    assert again.exit_code == 0, again.output
    assert again.stdout == f"already running at 127.0.0.1:{port} (pid {pid})\n"

    # And status (as a real process, workdir from the environment too) reports it
    status = _cli_process("status", "--workdir", wd)
    assert (status.returncode, status.stdout) == (0, f"running at 127.0.0.1:{port} (pid {pid})\n"), status.stderr
    from_env = _cli("status", env={"KSTREAM_BROKER_DIR": wd})
    assert from_env.exit_code == 0, from_env.output

    # And the log shows the start, limited to the lines asked for
    logs = _cli("logs", "-n", "20", "--workdir", wd)
    assert logs.exit_code == 0, logs.output
    assert "Kafka Server started" in logs.stdout
    assert 0 < len(logs.stdout.splitlines()) <= 20

    # And Kafka's own tools work against it from the same jars
    libs = LocalBroker(workdir).resolve()
    bootstrap = f"127.0.0.1:{port}"
    create = java_tool(libs, TOPIC_COMMAND, "--bootstrap-server", bootstrap, "--create", "--topic", "kept")
    subprocess.run(create, capture_output=True, timeout=120, check=True)

    # When it stops
    stopped = _cli("stop", "--workdir", wd)

    # Then it is gone, and stopping again or asking for status says so
    assert (stopped.exit_code, stopped.stdout) == (0, "stopped\n")
    assert not _accepts(port)
    assert (_cli("stop", "--workdir", wd).stdout, _cli("status", "--workdir", wd).exit_code) == ("not running\n", 3)
    assert _cli("status", "--workdir", wd).stdout == "stopped\n"

    # When it starts again without a port, with Kafka's own JVM settings this time
    restarted = _cli("start", "--workdir", wd, "--jvm", "kafka")

    # Then it keeps its address, its cluster and its topics, and runs on G1 with C2
    assert restarted.exit_code == 0, restarted.output
    assert f"running at {bootstrap} " in restarted.stdout
    new_pid = re.search(r"\(pid (\d+)\)", restarted.stdout)
    assert new_pid, restarted.stdout
    cmdline = Path(f"/proc/{new_pid[1]}/cmdline").read_bytes().split(b"\0")
    assert b"-XX:+UseG1GC" in cmdline and b"-XX:TieredStopAtLevel=1" not in cmdline, cmdline
    assert json.loads((workdir / "state.json").read_text())["cluster_id"] == cluster_id
    assert "kept" in _topics(libs, bootstrap)
    assert LocalBroker(workdir).stop()


def test_missing_java_is_one_clear_line(tmp_path: Path) -> None:
    # Given a PATH without java (nor mvn)
    empty = tmp_path / "bin"
    empty.mkdir()

    # When the broker is started as a real process
    done = _cli_process("start", "--workdir", str(tmp_path / "broker"), path=str(empty))

    # Then it fails with exit 1 and one line that says what to install
    assert done.returncode == 1
    assert done.stderr.startswith("Error: Java 17 or newer is needed for the local broker: install it"), done.stderr
    assert done.stderr.count("\n") == 1


def test_tool_class_names_exist_in_the_jars(tmp_path: Path) -> None:
    libs = LocalBroker(tmp_path / "broker").resolve()
    classes: set[str] = set()
    for jar in libs.glob("*.jar"):
        with zipfile.ZipFile(jar) as opened:
            classes.update(opened.namelist())
    for main in (CONSUMER_GROUP_COMMAND, CONSOLE_PRODUCER, CONSOLE_CONSUMER, TOPIC_COMMAND, STORAGE_TOOL):
        assert main.replace(".", "/") + ".class" in classes
