"""Every bad input to the CLI is one line on stderr, no traceback, and the documented exit code
(1: the command failed, 2: the command line itself is wrong). Each case runs the real console
entry point in a subprocess, against the session's broker where it needs one."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from kstream.config import Settings

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CHAIN = "tests/apps/chain.py:topology"
SASL = ["-X", "security.protocol=SASL_PLAINTEXT", "-X", "sasl.mechanism=PLAIN",
        "-X", "sasl.username=kstream", "-X", "sasl.password=secret"]


def _dead_address() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


FILES = {
    "bad.toml": 'namespace = "x"\n[topics\npartitions = 3\n',
    "types.toml": 'hop_limit = "many"\n',
    "nested.toml": "[topics]\npartitions = 0\n",
    "kafka.toml": 'kafka = "acks=all"\n',
}

# (arguments after the global -b/-n, exit code, what the line says); {dir} is a folder holding FILES.
CASES = [
    pytest.param(["-X", "no.such.prop=1", "topics", "plan", CHAIN], 1,
                 'invalid Kafka client setting no.such.prop=1: No such configuration property', id="unknown -X property"),
    pytest.param(["-X", "acks=maybe", "run", CHAIN], 1,
                 "invalid Kafka client setting acks=maybe: Invalid value", id="bad -X value"),
    pytest.param(["-X", "acks", "topics", "plan", CHAIN], 2, "'acks' is not PROP=VALUE", id="-X without =VALUE"),
    pytest.param(["--config", "{dir}/bad.toml", "topics", "plan", CHAIN], 1, "bad.toml is not valid TOML", id="bad TOML"),
    pytest.param(["--config", "{dir}/missing.toml", "topics", "plan", CHAIN], 1, "cannot read config file",
                 id="missing config file"),
    pytest.param(["--config", "{dir}/types.toml", "topics", "plan", CHAIN], 1,
                 "invalid setting hop_limit: Input should be a valid integer", id="wrong type"),
    pytest.param(["--config", "{dir}/nested.toml", "topics", "plan", CHAIN], 1,
                 "invalid setting topics.partitions: Input should be greater than or equal to 1", id="out of range"),
    pytest.param(["--config", "{dir}/kafka.toml", "topics", "plan", CHAIN], 1,
                 "invalid setting kafka: must be a table", id="kafka not a table"),
    pytest.param([*SASL, "topics", "plan", CHAIN], 1, "SASL PLAIN mechanism handshake failed",
                 id="authentication failure"),
    pytest.param(["-b", "{dead}", "topics", "plan", CHAIN], 1, "no Kafka broker answered", id="unreachable broker"),
    pytest.param(["-b", "{dead}", "run", CHAIN], 1, "Connection refused", id="unreachable broker, run"),
    pytest.param(["run", CHAIN], 1, "does not exist: run `kstream topics apply", id="missing topics, run"),
    pytest.param(["start", CHAIN, "parse"], 1, "does not exist: run `kstream topics apply", id="missing topic, start"),
    pytest.param(["topics", "plan", "tests/apps/nope.py:topology"], 1, "no such file: tests/apps/nope.py",
                 id="APP file missing"),
    pytest.param(["topics", "plan", "tests.apps.nope:topology"], 1, "cannot import tests.apps.nope", id="APP module missing"),
    pytest.param(["run", "tests/apps/chain.py:nothing"], 1, "has no attribute 'nothing'", id="APP attribute missing"),
    pytest.param(["topics", "plan"], 2, "Missing argument 'APP'", id="APP not given"),
    pytest.param(["run", CHAIN, "--node", "nope"], 1, "has no node 'nope'", id="unknown node"),
]


@pytest.mark.parametrize(("args", "code", "says"), CASES)
def test_bad_input_is_one_line_with_the_documented_exit_code(settings: Settings, tmp_path: Path, args: list[str],
                                                             code: int, says: str) -> None:
    # Given a fresh namespace (no topics) and the bad input
    for name, text in FILES.items():
        (tmp_path / name).write_text(text)
    argv = [a.format(dir=tmp_path, dead=_dead_address()) for a in args]
    env = {**os.environ, "CHAIN_SRC": f"{settings.namespace}.in", "CHAIN_DST": f"{settings.namespace}.out"}
    env = {k: v for k, v in env.items() if not k.startswith("KSTREAM_")}
    # When the CLI runs it
    proc = subprocess.run([sys.executable, "-m", "kstream.cli.main", "-b", settings.bootstrap_servers,
                           "-n", settings.namespace, *argv], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120, check=False)
    # Then: the documented exit code and exactly one line, which says what is wrong
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert says in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stdout == ""
