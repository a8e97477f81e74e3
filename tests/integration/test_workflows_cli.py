"""``kstream workflows ...`` through click, and ``kstream serve`` as a real process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from kstream.cli.main import cli
from kstream.config import Settings
from tests.apps.onboarding_wf import Services, make
from tests.integration.kafkatools import provision, running, wait_until
from tests.integration.wftools import free_port, http, wait_states

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
APP = "tests/apps/onboarding_wf.py:workflow"


def test_workflows_cli_starts_shows_lists_and_cancels(settings: Settings) -> None:
    services = Services(delay={"crm": 30.0})
    wf = make(services)
    provision(wf.topology, settings)
    runner = CliRunner()
    base = ["-b", settings.bootstrap_servers, "-n", settings.namespace, "workflows"]
    with running(wf.topology, settings):
        # start with a key prints the id (the same id for the same key)
        first = runner.invoke(cli, [*base, "start", APP, "--input", '{"email": "cli@x"}', "--key", "k1"])
        assert first.exit_code == 0, first.output
        wid = first.output.strip()
        again = runner.invoke(cli, [*base, "start", APP, "--input", '{"email": "cli@x"}', "--key", "k1"])
        assert again.output.strip() == wid
        wait_until(lambda: len(services.of("provision")) == 1, timeout=60, what="the branches")
        shown = runner.invoke(cli, [*base, "status", APP, wid])
        assert shown.exit_code == 0, shown.output
        doc = json.loads(shown.output)
        assert doc["workflowId"] == wid and doc["steps"]["crm"]["status"] == "running"
        listed = runner.invoke(cli, [*base, "list", APP, "--status", "running"])
        assert wid in listed.output and "crm:running" in listed.output
        cancelled = runner.invoke(cli, [*base, "cancel", APP, wid])
        assert cancelled.exit_code == 0, cancelled.output
        wait_states(settings, wf, [wid], {"compensating", "cancelled"})
    # bad input: one line, exit 1 (failure) or 2 (usage)
    missing = runner.invoke(cli, [*base, "status", APP, "no-such-id"])
    assert missing.exit_code == 1 and missing.output.strip().startswith("error: no workflow no-such-id")
    bad = runner.invoke(cli, [*base, "start", APP, "--input", "{nope"])
    assert bad.exit_code == 2 and "not JSON" in bad.output


def test_serve_runs_the_api_as_a_process(settings: Settings, tmp_path: Path) -> None:
    wf = make(Services())
    provision(wf.topology, settings)
    port = free_port()
    token = tmp_path / "token"
    token.write_text("t0ken\n")
    env = {**os.environ, "KSTREAM_BOOTSTRAP_SERVERS": settings.bootstrap_servers, "KSTREAM_NAMESPACE": settings.namespace}
    log = tmp_path / "serve.log"
    with log.open("wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "kstream.cli.main", "serve", APP, "--port", str(port),
                                 "--token-file", str(token), "--log-level", "warning"],
                                cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=err)
    url = f"http://127.0.0.1:{port}"
    try:
        def ready() -> bool:
            try:
                return http("GET", f"{url}/readyz", timeout=2)[0] == 200
            except OSError:
                return False

        wait_until(ready, timeout=60, what="the API process to be ready")
        with running(wf.topology, settings):
            status, body = http("POST", f"{url}/workflows/onboarding", {"email": "p@x"}, {"Authorization": "Bearer t0ken"})
            assert status == 202, body
            wait_states(settings, wf, [body["workflowId"]], {"completed"})
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log.read_text()[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
