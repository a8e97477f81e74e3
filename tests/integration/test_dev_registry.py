"""`kstream dev registry start|status|stop`: a real Apicurio Registry in a temporary workdir, as a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from kstream.dev.registry import LocalRegistry

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def workdir(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "registry"
    yield path
    LocalRegistry(path).stop(timeout=10)  # whatever a failed assertion left running


def _dev(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kstream.cli.main", "dev", "registry", *args],
                          cwd=REPO, capture_output=True, text=True, timeout=180, check=False)


def test_start_status_stop_of_the_local_registry(workdir: Path) -> None:
    # Given no registry in the workdir
    stopped = _dev("status", "--workdir", str(workdir))
    assert (stopped.returncode, stopped.stdout.strip()) == (3, "stopped")
    # When it is started on any free port
    port = _bind_any()
    started = _dev("start", "--port", str(port), "--workdir", str(workdir))
    assert started.returncode == 0, started.stderr
    url = f"http://127.0.0.1:{port}/apis/ccompat/v7"
    assert started.stdout.strip().startswith(f"apicurio registry 2.6.13.Final running at {url} (pid ")
    # Then its Confluent API answers, status reports it, and a second start finds it
    with urllib.request.urlopen(f"{url}/subjects", timeout=10) as resp:
        assert json.loads(resp.read()) == []
    status = _dev("status", "--workdir", str(workdir))
    assert status.returncode == 0 and status.stdout.startswith(f"running at {url}")
    again = _dev("start", "--workdir", str(workdir))
    assert again.returncode == 0 and again.stdout.startswith(f"already running at {url}")
    # When it is stopped, it is gone
    assert _dev("stop", "--workdir", str(workdir)).stdout.strip() == "stopped"
    assert _dev("status", "--workdir", str(workdir)).returncode == 3
    assert _dev("stop", "--workdir", str(workdir)).stdout.strip() == "not running"


def test_a_taken_port_is_one_line_and_exit_1(workdir: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _dev("start", "--port", str(port), "--workdir", str(workdir))
    assert result.returncode == 1
    assert result.stderr.strip() == f"Error: port {port} on 127.0.0.1 is already in use"


def _bind_any() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
