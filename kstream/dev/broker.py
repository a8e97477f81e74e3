"""A local Apache Kafka broker for development and tests, run from the official Maven Central jars.

One KRaft node (broker + controller) on 127.0.0.1 only, tuned to start fast and to make groups and
compaction react quickly. Its workdir holds ``server.properties``, ``data/``, ``kafka.log`` and
``state.json``; the jars live in a cache shared by all clones and test sessions (keyed by the pom).

The broker is a detached JVM that outlives its starter; later processes find it through
``state.json``. A pid counts as our broker only if it is alive, runs ``kafka.Kafka`` with this
workdir's ``server.properties`` (pids get reused) and, for `status`, its port accepts connections.
Needs ``java`` 17+ on PATH, and ``mvn`` once. POSIX only.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypedDict, cast

from kstream.dev.security import Security, ensure_material, format_arguments, security_files, server_properties, write_client_config
from kstream.errors import LocalBrokerError

# Main classes of Kafka's command-line tools, checked in the 4.3.1 jars (kafka-tools-4.3.1.jar).
CONSUMER_GROUP_COMMAND = "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand"
CONSOLE_PRODUCER = "org.apache.kafka.tools.ConsoleProducer"
CONSOLE_CONSUMER = "org.apache.kafka.tools.consumer.ConsoleConsumer"
TOPIC_COMMAND = "org.apache.kafka.tools.TopicCommand"
# Still in the Scala core jar in 4.x; org.apache.kafka.tools.StorageTool does not exist.
STORAGE_TOOL = "kafka.tools.StorageTool"
SERVER_MAIN = "kafka.Kafka"

POM = Path(__file__).parent / "kafka" / "pom.xml"
LOG4J_CONFIG = Path(__file__).parent / "log4j2.properties"
DEFAULT_PORT = 9092

_JAVA_MISSING = "Java 17 or newer is needed for the local broker{found}: install it (Debian: {apt})"
_JAVA_APT = "apt-get install openjdk-17-jre-headless"
_MAVEN_MISSING = "Maven is needed to fetch the Kafka jars: install it (Debian: apt-get install maven)"
# Either line means the broker is registered, unfenced and serving (the second comes first).
_READY_LINES = ("Kafka Server started", "Transitioning from RECOVERY to RUNNING")
# Measured on 2 cores: C1-only + serial GC reaches "ready" in ~2.8 s instead of ~3.5 s, and
# was no slower on test-sized workloads (300k small records) since little code gets hot.
_JVM_OPTS = ("-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Djava.awt.headless=true")
_BROKER_HEAP = ("-Xms256m", "-Xmx1g")
JvmProfile = Literal["dev", "kafka"]
JVM_PROFILES: dict[JvmProfile, tuple[str, ...]] = {
    "dev": (*_JVM_OPTS, *_BROKER_HEAP),
    # What Kafka's own scripts run a broker with (kafka-run-class.sh's KAFKA_JVM_PERFORMANCE_OPTS,
    # kafka-server-start.sh's KAFKA_HEAP_OPTS): C2 and G1. Slower to start and to warm up, but
    # under sustained load its produce and fetch round trips are several times shorter (measured
    # at 5,000 msgs/s on 2 cores: produce-to-append p50 2 ms instead of 6-11 ms), so it is the
    # broker latency figures are measured on.
    "kafka": ("-server", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-XX:InitiatingHeapOccupancyPercent=35",
              "-XX:+ExplicitGCInvokesConcurrent", "-XX:MaxInlineLevel=15", "-Djava.awt.headless=true",
              "-Xms1g", "-Xmx1g"),
}

# In .properties a trailing "# ..." is part of the value: comments stay on their own lines.
_SERVER_PROPERTIES = """\
process.roles=broker,controller
node.id=1
# Dynamic quorum (KIP-853): formatted with --standalone, so the controller port may change
# between runs without touching the data dir.
controller.quorum.bootstrap.servers=127.0.0.1:{controller_port}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}
advertised.listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs={data_dir}
# One node: every internal topic has a single replica.
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
min.insync.replicas=1
default.replication.factor=1
# Fewer internal partitions to create and load (50 each by default); a small gain, measured
# ~0.4 s on the first transactional producer, none visible on the first group join.
offsets.topic.num.partitions=4
transaction.state.log.num.partitions=4
# Timed-out transactions are aborted by a pass every 10 s (Kafka's default), the first 10 s after
# start. Not more often: after a crash the broker loads its transactions before it is registered
# again (DUPLICATE_BROKER_REGISTRATION, up to ~8 s here), and an abort in that window finds no
# partition leader and drops its markers, which leaves the partitions hanging for good (their
# last stable offset never moves). 1 s lost data in 5 of 11 broker crashes; see kstream.txns.
transaction.abort.timed.out.transaction.cleanup.interval.ms=10000
num.partitions=1
# Topics are declared by the apps; a typo must fail, not create a topic.
auto.create.topics.enable=false
group.initial.rebalance.delay.ms=0
# Compaction visible within a second; the default 128 MiB dedupe buffer is heap.
log.cleaner.backoff.ms=200
log.cleaner.dedupe.buffer.size=8388608
# Dead group members are noticed in seconds, not the production 45 s.
group.consumer.min.heartbeat.interval.ms=500
group.consumer.heartbeat.interval.ms=500
group.consumer.min.session.timeout.ms=3000
group.consumer.session.timeout.ms=6000
group.min.session.timeout.ms=1000
# After a crash (kill -9) the old registration blocks the restarted broker until its session
# expires: ~8 s to restart with these, ~13 s with the defaults (2000/9000).
broker.heartbeat.interval.ms=1000
broker.session.timeout.ms=4000
"""


@dataclass(frozen=True)
class BrokerInfo:
    """A running local broker."""

    pid: int
    bootstrap: str
    controller_port: int
    workdir: Path
    security: Security = "plaintext"
    client_config: Path | None = None
    """For a secured broker: a kstream settings file (``--config``) for its super user."""


class _State(TypedDict, total=False):
    pid: int | None
    bootstrap: str
    controller_port: int
    cluster_id: str
    version: str
    security: Security


def kafka_version() -> str:
    """The Kafka version pinned in ``kafka/pom.xml``."""
    found = re.search(r"<kafka\.version>\s*([^<\s]+)", POM.read_text())
    if found is None:
        raise LocalBrokerError(f"{POM} does not set <kafka.version>")
    return found[1]


def require_tools(*, maven: bool = True) -> None:
    """Raise a one-line `LocalBrokerError` unless ``java`` 17+ (and ``mvn`` if asked) is on PATH."""
    java = shutil.which("java")
    if java is None:
        raise LocalBrokerError(_JAVA_MISSING.format(found="", apt=_JAVA_APT))
    # Printed on stderr: 'openjdk version "17.0.15" ...', or 'java version "1.8.0_402"' for Java 8.
    out = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)
    match = re.search(r'version "(?:1\.)?(\d+)', out.stderr + out.stdout)
    if match is None or int(match[1]) < 17:
        found = f" (found Java {match[1]})" if match else f" ({java} -version did not say its version)"
        raise LocalBrokerError(_JAVA_MISSING.format(found=found, apt=_JAVA_APT))
    if maven and shutil.which("mvn") is None:
        raise LocalBrokerError(_MAVEN_MISSING)


def java_tool(libs: Path, main_class: str, *args: str) -> list[str]:
    """The argv that runs one of Kafka's command-line tools (e.g. `TOPIC_COMMAND`) from ``libs``."""
    # Log lines go to stderr so that they never mix with the output callers parse.
    return [*_java(libs, "-Xmx512m", "-Dkstream.log.target=SYSTEM_ERR"), main_class, *args]


class LocalBroker:
    """The local broker of one working directory; every method may block (JVM, Maven, sockets)."""

    def __init__(self, workdir: Path, *, libs_cache: Path | None = None, jvm: JvmProfile = "dev") -> None:
        """``jvm``: the JVM options the broker starts with (:data:`JVM_PROFILES`): ``dev`` starts
        fast and stays small, ``kafka`` is what Kafka's own start scripts use."""
        self.workdir = workdir
        self.jvm = jvm
        self.libs_cache = libs_cache if libs_cache is not None else _default_libs_cache()
        self._state_path = workdir / "state.json"
        self._properties_path = workdir / "server.properties"

    @property
    def log_path(self) -> Path:
        return self.workdir / "kafka.log"

    def resolve(self) -> Path:
        """Fetch the jars into `libs_cache` unless already there; return that directory.

        Maven copies into a temporary sibling that is renamed into place, so a concurrent
        resolve or an interrupted one never leaves a half-filled directory behind.
        """
        libs = self.libs_cache
        if libs.is_dir():
            return libs
        with maven_copy(POM, libs.parent, what="the Kafka jars") as download:
            move_into_place(download, libs)
        return libs

    def status(self) -> BrokerInfo | None:
        """The running broker, or None (never started, stopped, crashed, or not answering)."""
        state = self._read_state()
        pid, bootstrap = state.get("pid"), state.get("bootstrap")
        if not pid or not bootstrap or not self._is_ours(pid):
            return None
        if not _accepts(int(bootstrap.rpartition(":")[2])):
            return None
        return self._info(pid, bootstrap, state.get("controller_port", 0), state.get("security", "plaintext"))

    def _info(self, pid: int, bootstrap: str, controller_port: int, security: Security) -> BrokerInfo:
        client = security_files(self.workdir).client_config if security != "plaintext" else None
        return BrokerInfo(pid, bootstrap, controller_port, self.workdir, security, client)

    def start(self, *, port: int | None = None, timeout: float = 90.0,
              security: Security | None = None) -> tuple[BrokerInfo, bool]:
        """Start the broker unless it runs; return it and whether this call started it.

        ``port`` None means the previous run's port, else 9092, else any free port, each only
        if free. Topics survive a restart: the data dir is formatted only on first use (or when
        it belongs to another cluster). ``timeout`` covers format and startup, not Maven.
        ``security`` None means the previous run's mode, else plaintext; ``"sasl_ssl"`` is
        :mod:`kstream.dev.security`. Changing the mode formats a new cluster (topics are lost):
        only a fresh data dir gets the super user's credentials.
        """
        with self._locked():
            running = self.status()
            if running is not None:
                if security is not None and running.security != security:
                    raise LocalBrokerError(f"the broker runs with security {running.security}: stop it to change that")
                return running, False
            libs = self.resolve()
            require_tools(maven=False)
            deadline = time.monotonic() + timeout
            state = self._read_state()
            stale = state.get("pid")
            if stale and self._is_ours(stale):
                # Alive but its port is closed: hung, or half-started by a killed caller.
                _terminate(stale, timeout=10.0)
            if port is None:
                # The previous run's port first: clients configured against it keep working.
                previous = state.get("bootstrap", "").rpartition(":")[2]
                port = _free_port(int(previous or 0), DEFAULT_PORT)
            elif _bind(port) is None:
                raise LocalBrokerError(f"port {port} on 127.0.0.1 is already in use")
            controller_port = _free_port(avoid=port)
            self.workdir.mkdir(parents=True, exist_ok=True)
            data = self.workdir.resolve() / "data"
            props = self._properties_path
            mode: Security = security or state.get("security", "plaintext")
            text = _SERVER_PROPERTIES.format(port=port, controller_port=controller_port, data_dir=data)
            format_args: list[str] = []
            if mode != "plaintext":
                files = security_files(self.workdir)
                ensure_material(files)
                text += server_properties(files, port=port, controller_port=controller_port)
                format_args = format_arguments(files)
            props.touch(mode=0o600)
            props.chmod(0o600)  # the secured mode writes passwords into it
            props.write_text(text)
            self.log_path.write_bytes(b"")  # each run starts a fresh log: readiness reads it
            cluster_id = state.get("cluster_id")
            same_mode = state.get("security", "plaintext") == mode
            if cluster_id is None or _formatted_cluster_id(data) != cluster_id or not same_mode:
                shutil.rmtree(data, ignore_errors=True)
                cluster_id = _new_cluster_id()
                self._format(libs, cluster_id, deadline, *format_args)
            pid = self._spawn(libs)
            bootstrap = f"127.0.0.1:{port}"
            self._write_state(
                {"pid": pid, "bootstrap": bootstrap, "controller_port": controller_port,
                 "cluster_id": cluster_id, "version": kafka_version(), "security": mode}
            )  # fmt: skip
            try:
                self._wait_ready(pid, port, deadline, timeout)
            except LocalBrokerError:
                _terminate(pid, timeout=0.0)
                self._write_state({**self._read_state(), "pid": None})
                raise
            if mode != "plaintext":
                write_client_config(security_files(self.workdir), bootstrap)
            return self._info(pid, bootstrap, controller_port, mode), True

    def stop(self, *, timeout: float = 30.0) -> bool:
        """SIGTERM the broker (SIGKILL after ``timeout``); False if it was not running."""
        with self._locked():
            state = self._read_state()
            pid = state.get("pid")
            running = pid is not None and self._is_ours(pid)
            if pid is not None and running:
                _terminate(pid, timeout=timeout)
            if state:
                self._write_state({**state, "pid": None})
            return running

    def _read_state(self) -> _State:
        return cast(_State, read_state(self._state_path))

    def _write_state(self, state: _State) -> None:
        write_state(self._state_path, state)

    def _locked(self) -> contextlib.AbstractContextManager[None]:
        return locked(self.workdir)

    def _is_ours(self, pid: int) -> bool:
        if not _alive(pid):
            return False
        cmdline = _cmdline(pid)
        return SERVER_MAIN in cmdline and str(self._properties_path.resolve()) in cmdline

    def _format(self, libs: Path, cluster_id: str, deadline: float, *extra: str) -> None:
        argv = [*_java(libs, *_BROKER_HEAP), STORAGE_TOOL, "format", "-t", cluster_id,
                "-c", str(self._properties_path.resolve()), "--standalone", *extra]  # fmt: skip
        left = max(deadline - time.monotonic(), 1.0)
        with self.log_path.open("ab") as log:
            try:
                done = subprocess.run(argv, check=False, stdin=subprocess.DEVNULL, stdout=log,
                                      stderr=subprocess.STDOUT, timeout=left)  # fmt: skip
            except subprocess.TimeoutExpired:
                done = None
        if done is None or done.returncode != 0:
            why = "timed out" if done is None else "failed"
            raise LocalBrokerError(f"formatting the Kafka data dir {why}; see {self.log_path}: {self._last_log_line()}")

    def _spawn(self, libs: Path) -> int:
        # posix_spawn, not Popen: a Popen object for a child meant to outlive us warns
        # (ResourceWarning) when collected. setsid detaches it from the terminal's Ctrl-C.
        argv = [*_java(libs, jvm=JVM_PROFILES[self.jvm]), SERVER_MAIN, str(self._properties_path.resolve())]
        redirects = [
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_OPEN, 1, str(self.log_path), os.O_WRONLY | os.O_APPEND, 0),
            (os.POSIX_SPAWN_DUP2, 1, 2),
        ]
        return os.posix_spawnp("java", argv, os.environ, file_actions=redirects, setsid=True)

    def _wait_ready(self, pid: int, port: int, deadline: float, timeout: float) -> None:
        while True:
            if not _alive(pid):
                why = "exited while starting"
            elif time.monotonic() > deadline:
                why = f"was not ready within {timeout:g} s"
            else:
                log = self.log_path.read_text(errors="replace")
                if any(line in log for line in _READY_LINES) and _accepts(port):
                    return
                time.sleep(0.1)
                continue
            raise LocalBrokerError(f"Kafka {why}; see {self.log_path}: {self._last_log_line()}")

    def _last_log_line(self) -> str:
        return _last_line(self.log_path.read_text(errors="replace").splitlines())


@contextlib.contextmanager
def maven_copy(pom: Path, near: Path, *, what: str) -> Iterator[Path]:
    """Resolve ``pom``'s dependencies with Maven into a temporary folder inside ``near`` (so the
    caller can rename what it builds there into place: a concurrent or interrupted fetch never
    leaves half a cache behind); the folder is removed afterwards."""
    require_tools()
    near.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".fetch-", dir=near))
    try:
        mvn = subprocess.run(
            ["mvn", "-B", "-q", "-f", str(pom), "dependency:copy-dependencies",
             f"-DoutputDirectory={tmp / 'download'}", "-DincludeScope=runtime"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if mvn.returncode != 0:
            lines = (mvn.stdout + mvn.stderr).splitlines()
            why = next((ln for ln in lines if ln.startswith("[ERROR]")), _last_line(lines))
            raise LocalBrokerError(f"Maven could not fetch {what}: {why}")
        yield tmp / "download"
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def move_into_place(built: Path, dest: Path) -> None:
    """Rename ``built`` to ``dest``; if another process got there first, keep theirs (it came
    from the same pom)."""
    try:
        built.rename(dest)
    except OSError:
        if not dest.is_dir():
            raise


def read_state(path: Path) -> dict[str, Any]:
    """A detached process's ``state.json`` ({} when missing or unreadable)."""
    try:
        loaded: dict[str, Any] = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return {}
    return loaded


def write_state(path: Path, state: Mapping[str, Any]) -> None:
    # Written whole then renamed, so a reader never sees half a file.
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    tmp.replace(path)


@contextlib.contextmanager
def locked(workdir: Path) -> Iterator[None]:
    """Serialise start/stop of one workdir across processes (two shells, two test runs)."""
    workdir.mkdir(parents=True, exist_ok=True)
    with open(workdir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _java(libs: Path, *options: str, jvm: tuple[str, ...] = _JVM_OPTS) -> list[str]:
    return ["java", *jvm, *options, f"-Dlog4j2.configurationFile={LOG4J_CONFIG}", "-cp", f"{libs}/*"]


def _default_libs_cache() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    digest = hashlib.sha1(POM.read_bytes(), usedforsecurity=False).hexdigest()[:12]
    return cache / "kstream" / f"kafka-{digest}" / "libs"


def _last_line(lines: list[str]) -> str:
    return next((ln.strip()[:300] for ln in reversed(lines) if ln.strip()), "(it is empty)")


def _new_cluster_id() -> str:
    # Kafka's own Uuid text form (22 chars, base64url); it rejects ids starting with "-".
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cid.startswith("-"):
            return cid


def _formatted_cluster_id(data: Path) -> str | None:
    try:
        text = (data / "meta.properties").read_text()
    except FileNotFoundError:
        return None
    found = re.search(r"^cluster\.id=(\S+)", text, re.MULTILINE)
    return found[1] if found else None


def _bind(port: int) -> int | None:
    """Bind 127.0.0.1:port (0: any) and release it; the port, or None if it is taken."""
    with socket.socket() as sock:
        # Like the JVM's server socket: a port in TIME_WAIT from a stopped broker is reusable.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return None
        bound: int = sock.getsockname()[1]
        return bound


def _free_port(*preferred: int, avoid: int = 0) -> int:
    """The first free port of ``preferred`` (0s skipped), else any free port but ``avoid``."""
    for port in preferred:
        if port and _bind(port):
            return port
    while True:
        port = _bind(0) or avoid
        if port != avoid:
            return port


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1.0).close()
    except OSError:
        return False
    return True


def _alive(pid: int) -> bool:
    # Reap first: a broker spawned by this very process stays a zombie (still "alive" for
    # kill(0)) after it dies until we wait for it.
    with contextlib.suppress(ChildProcessError):
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: _cmdline tells it is not ours
    return True


def _cmdline(pid: int) -> str:
    proc = Path(f"/proc/{pid}/cmdline")
    if Path("/proc/self").exists():
        try:
            return proc.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            return ""
    # No /proc (macOS): ps shows the full argv too.
    ps = subprocess.run(["ps", "-ww", "-o", "args=", "-p", str(pid)], capture_output=True, text=True, check=False)
    return ps.stdout


def _terminate(pid: int, *, timeout: float) -> None:
    """SIGTERM (Kafka's shutdown hook closes logs cleanly), then SIGKILL after ``timeout``."""
    for sig, grace in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while _alive(pid):
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        else:
            return
    raise LocalBrokerError(f"Kafka (pid {pid}) did not exit after SIGKILL")
