"""``kstream console`` and ``kstream serve --console`` as real processes; bad input as one line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from kstream.cli.main import cli
from kstream.config import Settings
from tests.apps.chain import make_chain
from tests.apps.onboarding_wf import Services, make
from tests.integration.kafkatools import provision, wait_until
from tests.integration.wftools import free_port, http

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CHAIN = "tests/apps/chain.py:topology"
WORKFLOW = "tests/apps/onboarding_wf.py:workflow"
TOKEN = "pr0cess-t0ken"


def _run(args: list[str], settings: Settings, tmp_path: Path, check: str) -> str:
    """Start ``kstream ARGS`` with a token file, wait until ``check`` answers with the token,
    stop it with SIGTERM (exit 0); returns what it logged."""
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    env = {**os.environ, "KSTREAM_BOOTSTRAP_SERVERS": settings.bootstrap_servers, "KSTREAM_NAMESPACE": settings.namespace,
           "CHAIN_SRC": f"{settings.namespace}.in", "CHAIN_DST": f"{settings.namespace}.out"}
    port = free_port()
    log = tmp_path / "console.log"
    with log.open("wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "kstream.cli.main", *args, "--port", str(port),
                                 "--token-file", str(token), "--log-level", "debug"],
                                cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=err)
    url = f"http://127.0.0.1:{port}"
    try:
        def up() -> bool:
            try:
                return http("GET", url + check, None, {"Authorization": f"Bearer {TOKEN}"}, timeout=5)[0] == 200
            except OSError:
                return False

        wait_until(up, timeout=60, what="the console process to answer")
        # Without the token: nothing
        assert http("GET", url + check)[0] == 401
        status, page = http("GET", url + check.replace("api/topology", "workflows"), None,
                            {"Authorization": f"Bearer {TOKEN}"})
        assert status == 200 and "onboarding" in page
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log.read_text()[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return log.read_text()


def test_console_alone_and_inside_serve(settings: Settings, tmp_path: Path) -> None:
    provision(make_chain(f"{settings.namespace}.in", f"{settings.namespace}.out"), settings)
    provision(make(Services()).topology, settings)
    logged = _run(["console", CHAIN, "--workflows", WORKFLOW], settings, tmp_path, "/api/topology")
    assert "console of chain on http://127.0.0.1:" in logged and TOKEN not in logged
    logged = _run(["serve", WORKFLOW, "--console", CHAIN], settings, tmp_path, "/console/api/topology")
    assert TOKEN not in logged


def test_bad_app_is_one_line() -> None:
    result = CliRunner().invoke(cli, ["console", "tests/apps/nosuch.py:topology"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == ["error: no such file: tests/apps/nosuch.py"]
