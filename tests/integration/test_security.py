"""kstream on a secured broker: SASL_SSL (SCRAM-SHA-512), TLS from a throwaway CA, ACLs enforced.

One secured dev broker for this module (``kstream dev broker start --security sasl_ssl``). The
super user provisions (topics, users, ACLs); the app runs as its own principal holding exactly
the ACLs ``kstream acls plan`` lists, given its password as ``-X sasl.password=...`` on the
command line, which must not stay visible in the process's argv.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner
from confluent_kafka.admin import AdminClient, ScramCredentialInfo, ScramMechanism, UserScramCredentialUpsertion

from kstream.acls import plan
from kstream.app import admin, cursor_reader, producer, trash_store
from kstream.cli.main import cli
from kstream.config import Settings, load_settings
from kstream.dev.broker import BrokerInfo, LocalBroker
from kstream.dev.security import security_files
from kstream.provision import apply as apply_topics
from kstream.provision import plan as plan_topics
from kstream.trash import TrashCodec, TrashEntry, entry_id
from kstream.types import Attempt
from tests.apps.secured import PAGES, make_secured
from tests.conftest import _free_port

pytestmark = pytest.mark.integration

APP = "tests/apps/secured.py:topology"
ORDERS = 5
EXPLODING = 3  # this order goes to the Trash, and through once replayed


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerInfo]:
    broker = LocalBroker(tmp_path_factory.mktemp("secured"))
    # A generous timeout: the machine running the tests may be shared and busy.
    info, _ = broker.start(port=_free_port(), security="sasl_ssl", timeout=240)
    try:
        yield info
    finally:
        broker.stop()


@pytest.fixture()
def su(secured: BrokerInfo, namespace: str) -> Settings:
    """The super user's settings, from the client settings file the broker wrote."""
    assert secured.client_config is not None
    return load_settings(secured.client_config, environ={}, overrides={
        "namespace": namespace, "topics": {"partitions": 2}, "limits": {"erp": {"rate": 500}},
    })


def _cli(settings_file: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["--config", str(settings_file), *args], env=env, catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def _user(su: Settings, name: str) -> str:
    """Create SCRAM user ``name`` with a random password; returns the password."""
    password = secrets.token_urlsafe(16)
    client = AdminClient({**su.client_properties(), "bootstrap.servers": su.bootstrap_servers})
    upsert = UserScramCredentialUpsertion(name, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192), password.encode())
    for future in client.alter_user_scram_credentials([upsert]).values():
        future.result(30)
    return password


def _settings_file(path: Path, su: Settings, *, user: str, extra: dict[str, str] | None = None) -> Path:
    """A settings file for ``user`` without its password, plus librdkafka ``extra``."""
    kafka = {k: v for k, v in su.kafka.items() if k not in ("sasl.username",)}
    kafka = {**kafka, "sasl.username": user, **(extra or {})}
    lines = [f'bootstrap_servers = "{su.bootstrap_servers}"', f'namespace = "{su.namespace}"',
             "[topics]", "partitions = 2", "[runtime]", "commit_interval = 0.5",
             "[limits.erp]", "rate = 500", "[kafka]", *(f'"{k}" = "{v}"' for k, v in kafka.items() if v)]
    path.write_text("\n".join(lines) + "\n")
    return path


def _wait(what: str, check: Callable[[], Any], timeout: float = 90.0, proc: subprocess.Popen[str] | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"worker exited ({proc.returncode}) while waiting for {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.3)


def _ids(su: Settings, topic: str) -> list[int]:
    return sorted(orjson.loads(m.value())["id"] for m in cursor_reader(su).read_compacted(topic, 30))


def _cmdline(pid: int) -> bytes:
    return Path(f"/proc/{pid}/cmdline").read_bytes()


def _produce(su: Settings, topic: str, orders: list[dict[str, Any]]) -> None:
    out = producer(su)
    for order in orders:
        out.produce(topic, orjson.dumps(order), str(order["id"]).encode(), None)
    assert out.flush(30) == 0 and not out.take_errors()


def _stop(worker: subprocess.Popen[str], output: Path) -> tuple[int, str, str]:
    """SIGTERM the worker (if it runs) and wait; its exit code, stdout and stderr."""
    if worker.poll() is None:
        worker.send_signal(signal.SIGTERM)
    worker.wait(timeout=60)
    return worker.returncode, (output / "out").read_text(), (output / "err").read_text()


@pytest.mark.parametrize("eos", [False, True], ids=["at_least_once", "exactly_once"])
def test_a_chain_runs_with_exactly_the_planned_acls(secured: BrokerInfo, su: Settings, tmp_path: Path, eos: bool) -> None:
    # Given topics, an app user, and exactly the ACLs `kstream acls plan` lists for it
    assert secured.client_config is not None
    src, dst = f"{su.namespace}.src", f"{su.namespace}.dst"
    topology = make_secured(src, dst, exactly_once=eos)
    client = admin(su)
    apply_topics(plan_topics(topology, su, client, create_external=True), client)
    user = f"app-{su.namespace}"
    password = _user(su, user)
    env = {"SEC_SRC": src, "SEC_DST": dst, "SEC_EOS": "1" if eos else "0"}
    code, out, err = _cli(secured.client_config, "-n", su.namespace, "acls", "apply", APP, "--principal", f"User:{user}", env=env)
    assert code == 0, err
    wanted = {a.key for a in plan(topology, su, principal=f"User:{user}")}
    assert f"{len(wanted)} ACL(s) created, 0 already present" in out
    assert set(client.acls(f"User:{user}")) == wanted, "the principal holds the planned ACLs and nothing else"

    # When its worker runs, given the password on the command line
    app_file = _settings_file(tmp_path / "app.toml", su, user=user)
    # (librdkafka's debug lines too: they list every client's settings)
    worker = _run(app_file, password, env, "-X", "debug=security,conf", "run", APP, "--log-level", "debug", output=tmp_path)
    try:
        # Then the password leaves its argv at once (it re-executes with it in the environment)
        _wait("argv without the password", lambda: b"kstream.cli.main" in _cmdline(worker.pid)
              and password.encode() not in _cmdline(worker.pid), timeout=10, proc=worker)
        # and orders flow end to end, one of them to the Trash; the batch node pages its source
        _produce(su, src, [{"id": i, "explode": i == EXPLODING} for i in range(1, ORDERS + 1)])
        code, _, err = _cli(secured.client_config, "-n", su.namespace, "start", APP, "fetch", env=env)
        assert code == 0, err
        batch = [1000 + i for i in range(2 * PAGES)]
        through = sorted([i for i in range(1, ORDERS + 1) if i != EXPLODING] + batch)
        _wait("orders at the destination", lambda: _ids(su, dst) == through, proc=worker)
        store = trash_store(su)
        entries = _wait("the trash entry", store.entries, proc=worker)
        assert [(e.node, e.error_type) for e in entries] == [("parse", "Permanent")]
        # When the super user replays it, it goes through (the worker reads the replay)
        code, out, err = _cli(secured.client_config, "-n", su.namespace, "trash", "replay", entries[0].id, env=env)
        assert code == 0, err
        _wait("the replayed order", lambda: _ids(su, dst) == sorted([*through, EXPLODING]), proc=worker)
        assert password.encode() not in _cmdline(worker.pid)
    finally:
        code, out, err = _stop(worker, tmp_path)
    # Then it stopped cleanly, and printed no secret and no error
    assert code == 0, err
    assert "sasl.password = [redacted]" in err, "the debug lines were written"
    assert password not in out + err
    assert " ERROR " not in err and "error:" not in err, err
    assert "rate limit coordination failed" not in err


def _provisioned(secured: BrokerInfo, su: Settings, *, eos: bool, without: tuple[str, str, str]) -> tuple[str, str, dict[str, str]]:
    """Topics, a user and its planned ACLs but ``without`` (type, name, operation); returns
    the user, its password and the app's environment."""
    assert secured.client_config is not None
    src, dst = f"{su.namespace}.src", f"{su.namespace}.dst"
    topology = make_secured(src, dst, exactly_once=eos)
    client = admin(su)
    apply_topics(plan_topics(topology, su, client, create_external=True), client)
    user = f"app-{su.namespace}"
    password = _user(su, user)
    acls = [a.key for a in plan(topology, su, principal=f"User:{user}") if (a.resource_type, a.name, a.operation) != without]
    assert len(acls) == len(plan(topology, su, principal=f"User:{user}")) - 1, f"{without} is not a planned ACL"
    client.create_acls(acls)
    return user, password, {"SEC_SRC": src, "SEC_DST": dst, "SEC_EOS": "1" if eos else "0"}


def _produce_trash_entry(su: Settings) -> None:
    when = datetime.now(UTC)
    entry = TrashEntry(
        id=entry_id("other", "node", "some.topic", 0, 1), topology="other", node="node", reason="error",
        error_type="ValueError", error_message="bad", traceback="", key=b"k", value=b"{}", headers=[],
        topic="some.topic", partition=0, offset=1, workflow="w", attempts=(Attempt(when, "ValueError: bad"),),
        first_failure=when, last_failure=when,
    )
    out = producer(su)
    out.produce(su.trash_topic, TrashCodec().encode(entry), entry.id.encode(), None)
    assert out.flush(30) == 0 and not out.take_errors()


def _run(app_file: Path, password: str, env: dict[str, str], *args: str, output: Path) -> subprocess.Popen[str]:
    """``kstream ARGS`` as the app user, its password on the command line; output to files in ``output``."""
    with (output / "out").open("w") as out, (output / "err").open("w") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "kstream.cli.main", "--config", str(app_file), "-X", f"sasl.password={password}", *args],
            env={**os.environ, **env}, stdout=out, stderr=err, text=True,
        )


@pytest.mark.parametrize(("eos", "missing"), [
    (False, ("GROUP", "{ns}.sec.limited", "READ")),
    (False, ("TOPIC", "{ns}.limits", "WRITE")),
    (False, ("TOPIC", "{ns}.trash", "WRITE")),
    (False, ("TOPIC", "{ns}.sec.limited", "WRITE")),
    (False, ("TOPIC", "{ns}.src", "READ")),
    (False, ("TOPIC", "{ns}.sec.limited.retry", "READ")),
    (False, ("TOPIC", "{ns}.status", "WRITE")),
    (False, ("TOPIC", "{ns}.cursors", "READ")),
    (False, ("TOPIC", "{ns}.cursors", "WRITE")),
    (False, ("GROUP", "kstream-reader-", "READ")),
    (False, ("TOPIC", "{ns}.trash", "READ")),
    (True, ("TRANSACTIONAL_ID", "{ns}.sec.deliver.", "WRITE")),
    (True, ("TOPIC", "{ns}.sec.deliver", "WRITE")),
], ids=["consumer-group", "limiter-claims", "trash", "output", "input", "retry-topic", "status", "cursors-read",
        "cursors-write", "reader-groups", "trash-read", "transactional-id", "output-in-a-transaction"])
def test_a_missing_acl_stops_the_worker_with_one_line_naming_it(secured: BrokerInfo, su: Settings, tmp_path: Path,
                                                                 eos: bool, missing: tuple[str, str, str]) -> None:
    # Given the planned ACLs but one, and a Trash that holds an entry (park_key nodes read it at start)
    kind, name, operation = missing[0], missing[1].format(ns=su.namespace), missing[2]
    user, password, env = _provisioned(secured, su, eos=eos, without=(kind, name, operation))
    _produce_trash_entry(su)
    # When the worker runs and gets orders (one of them for the Trash), and two batch runs
    worker = _run(_settings_file(tmp_path / "app.toml", su, user=user), password, env, "run", APP, output=tmp_path)
    _produce(su, env["SEC_SRC"], [{"id": i, "explode": i == EXPLODING} for i in range(1, ORDERS + 1)])
    assert secured.client_config is not None
    code, _, err = _cli(secured.client_config, "-n", su.namespace, "start", APP, "fetch", env=env)
    assert code == 0, err
    # (a run reads the cursors when it starts: the second finds those of the first)
    _wait("cursors, or the worker to stop", lambda: worker.poll() is not None or cursor_reader(su).read_compacted(su.cursors_topic, 30))
    code, _, err = _cli(secured.client_config, "-n", su.namespace, "start", APP, "fetch", env=env)
    assert code == 0, err
    try:
        worker.wait(timeout=90)
    finally:
        code, out, err = _stop(worker, tmp_path)
    # Then it stops (no hang) with one error line that names the missing right
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 1, err
    assert len(errors) == 1, err
    assert f"not authorized: User:{user} may not {operation} {kind} {name}" in errors[0]
    assert password not in out + err


COMMANDS = (["topics", "plan", APP], ["run", APP], ["trash", "list"], ["start", APP, "fetch"], ["lag", APP])


@pytest.mark.parametrize(("case", "expected"), [
    ("wrong password", "error: authentication failed: "),
    ("no TLS trust", "error: TLS handshake failed: "),
])
def test_a_failed_login_is_one_error_line_within_10_s(su: Settings, tmp_path: Path, case: str, expected: str) -> None:
    # Given a user whose password is wrong, or who does not trust the broker's CA (no ssl.ca.location)
    user = f"app-{su.namespace}"
    password = _user(su, user)
    if case == "wrong password":
        password = "not-" + password
        app_file = _settings_file(tmp_path / "app.toml", su, user=user)
    else:
        app_file = _settings_file(tmp_path / "app.toml", su, user=user, extra={"ssl.ca.location": ""})
        assert "ssl.ca.location" not in app_file.read_text()
    for command in COMMANDS:
        # When a command runs
        started = time.monotonic()
        proc = _run(app_file, password, {}, *command, output=tmp_path)
        proc.wait(timeout=60)
        took = time.monotonic() - started
        out, err = (tmp_path / "out").read_text(), (tmp_path / "err").read_text()
        # Then it fails with one line saying why, within 10 s, and shows no secret
        assert proc.returncode == 1, (command, err)
        assert len(err.splitlines()) == 1 and err.startswith(expected), (command, err)
        assert ("invalid credentials" if case == "wrong password" else "certificate verify failed") in err
        assert password not in out + err
        assert took < 10, f"{command} took {took:.1f} s"


def test_dev_broker_status_prints_the_client_settings_but_no_secret(secured: BrokerInfo) -> None:
    result = CliRunner().invoke(cli, ["dev", "broker", "status", "--workdir", str(secured.workdir)])
    password = security_files(secured.workdir).admin_password.read_text().strip()
    assert result.exit_code == 0, result.output
    assert f"running at {secured.bootstrap}" in result.output
    assert f"--config {secured.client_config}" in result.output
    assert "KSTREAM_KAFKA_SASL_PASSWORD_FILE=" in result.output
    assert password not in result.output
    assert oct(security_files(secured.workdir).admin_password.stat().st_mode & 0o777) == "0o600"


def test_commands_point_at_the_settings_of_a_secured_local_broker(secured: BrokerInfo, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # Given the secured dev broker runs from this folder and nothing else is configured
    (tmp_path / ".kstream").mkdir()
    (tmp_path / ".kstream" / "broker").symlink_to(secured.workdir)
    monkeypatch.chdir(tmp_path)
    for name in ("KSTREAM_BOOTSTRAP_SERVERS", "KSTREAM_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    app = str(Path(__file__).parents[1] / "apps" / "secured.py") + ":topology"
    # When a command runs without settings, it says which settings to pass, in one line
    result = CliRunner().invoke(cli, ["topics", "plan", app])
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        f"error: the local broker at {secured.bootstrap} is secured: pass --config {secured.client_config} "
        "(its super user) or your own settings"]
    # and with them it works (the bootstrap address still comes from the local broker)
    result = CliRunner().invoke(cli, ["-X", "security.protocol=SASL_SSL", "-X", "sasl.mechanism=SCRAM-SHA-512",
                                      "-X", "sasl.username=admin", "-X", f"ssl.ca.location={security_files(secured.workdir).ca}",
                                      "-X", f"sasl.password.file={security_files(secured.workdir).admin_password}",
                                      "topics", "plan", app])
    assert result.exit_code == 0, result.output
    assert "create" in result.stdout
