"""A local schema registry for development and tests: Apicurio Registry from Maven Central.

Apicurio's all-in-one Quarkus app (``io.apicurio:apicurio-registry-app:2.6.13.Final``, classifier
``all``, a tar.gz) is fetched once with Maven (``registry/pom.xml``) and unpacked into a cache
shared by all clones and test sessions, like the Kafka jars. It listens on 127.0.0.1 only and
keeps its schemas in memory: a restart starts empty. Clients use its Confluent-compatible API,
``http://127.0.0.1:PORT/apis/ccompat/v7`` (:attr:`RegistryInfo.url`).

Like the broker, it is a detached JVM found again through ``state.json`` in its workdir; a pid
counts as ours only if it runs this cache's runner jar with this workdir's port marker.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict, cast

from kstream.dev.broker import (
    _alive,
    _bind,
    _cmdline,
    _free_port,
    _last_line,
    _terminate,
    locked,
    maven_copy,
    move_into_place,
    read_state,
    require_tools,
    write_state,
)
from kstream.errors import LocalBrokerError

POM = Path(__file__).parent / "registry" / "pom.xml"
VERSION = "2.6.13.Final"
RUNNER = f"apicurio-registry-app-{VERSION}-runner.jar"
CCOMPAT = "/apis/ccompat/v7"
DEFAULT_PORT = 8081
# Quick to start on 2 shared cores (C1 only, serial GC), and small: ~180 MB resident.
_JVM_OPTS = ("-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Xms64m", "-Xmx384m", "-Djava.awt.headless=true")


@dataclass(frozen=True)
class RegistryInfo:
    pid: int
    port: int
    workdir: Path

    @property
    def url(self) -> str:
        """The Confluent-compatible API (what ``schema_registry.url`` and kcat ``-r`` take)."""
        return f"http://127.0.0.1:{self.port}{CCOMPAT}"


class _State(TypedDict, total=False):
    pid: int | None
    port: int


class LocalRegistry:
    """The local registry of one working directory; every method may block (JVM, Maven, HTTP)."""

    def __init__(self, workdir: Path, *, cache: Path | None = None) -> None:
        self.workdir = workdir
        self.cache = cache if cache is not None else _default_cache()
        self._state_path = workdir / "state.json"

    @property
    def log_path(self) -> Path:
        return self.workdir / "registry.log"

    def resolve(self) -> Path:
        """Fetch and unpack the app into `cache` unless already there; the runner jar's path."""
        runner = self.cache / RUNNER
        if runner.is_file():
            return runner
        with maven_copy(POM, self.cache.parent, what="Apicurio Registry") as download:
            archive = next(download.glob("*.tar.gz"))
            unpacked = download.parent / "app"
            with tarfile.open(archive) as tar:
                tar.extractall(unpacked, filter="data")
            move_into_place(unpacked, self.cache)
        return runner

    def status(self) -> RegistryInfo | None:
        """The running registry, or None (never started, stopped, crashed, or not answering)."""
        state = self._read_state()
        pid, port = state.get("pid"), state.get("port")
        if not pid or not port or not self._is_ours(pid, port) or not _answers(port):
            return None
        return RegistryInfo(pid, port, self.workdir)

    def start(self, *, port: int | None = None, timeout: float = 90.0) -> tuple[RegistryInfo, bool]:
        """Start the registry unless it runs; return it and whether this call started it.

        ``port`` None means the previous run's port, else 8081, else any free port.
        ``timeout`` covers the startup, not the first download.
        """
        with locked(self.workdir):
            running = self.status()
            if running is not None:
                return running, False
            runner = self.resolve()
            require_tools(maven=False)
            state = self._read_state()
            stale = state.get("pid")
            if stale and self._is_ours(stale, state.get("port", 0)):
                _terminate(stale, timeout=10.0)
            if port is None:
                port = _free_port(state.get("port", 0), DEFAULT_PORT)
            elif _bind(port) is None:
                raise LocalBrokerError(f"port {port} on 127.0.0.1 is already in use")
            self.log_path.write_bytes(b"")
            pid = self._spawn(runner, port)
            self._write_state({"pid": pid, "port": port})
            deadline = time.monotonic() + timeout
            while not _answers(port):
                if not _alive(pid) or time.monotonic() > deadline:
                    why = "exited while starting" if not _alive(pid) else f"was not ready within {timeout:g} s"
                    _terminate(pid, timeout=0.0)
                    self._write_state({"pid": None, "port": port})
                    raise LocalBrokerError(f"Apicurio Registry {why}; see {self.log_path}: "
                                           f"{_last_line(self.log_path.read_text(errors='replace').splitlines())}")
                time.sleep(0.2)
            return RegistryInfo(pid, port, self.workdir), True

    def stop(self, *, timeout: float = 30.0) -> bool:
        """SIGTERM the registry (SIGKILL after ``timeout``); False if it was not running."""
        with locked(self.workdir):
            state = self._read_state()
            pid = state.get("pid")
            running = pid is not None and self._is_ours(pid, state.get("port", 0))
            if pid is not None and running:
                _terminate(pid, timeout=timeout)
            if state:
                self._write_state({**state, "pid": None})
            return running

    def _spawn(self, runner: Path, port: int) -> int:
        # Detached like the broker (see kstream.dev.broker._spawn for why posix_spawn and setsid).
        argv = ["java", *_JVM_OPTS, "-Dquarkus.http.host=127.0.0.1", f"-Dquarkus.http.port={port}",
                f"-Dkstream.registry.workdir={self.workdir.resolve()}", "-jar", str(runner)]
        redirects = [
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_OPEN, 1, str(self.log_path), os.O_WRONLY | os.O_APPEND, 0),
            (os.POSIX_SPAWN_DUP2, 1, 2),
        ]
        return os.posix_spawnp("java", argv, os.environ, file_actions=redirects, setsid=True)

    def _is_ours(self, pid: int, port: int) -> bool:
        if not _alive(pid):
            return False
        cmdline = _cmdline(pid)
        return RUNNER in cmdline and f"-Dkstream.registry.workdir={self.workdir.resolve()}" in cmdline \
            and f"-Dquarkus.http.port={port}" in cmdline

    def _read_state(self) -> _State:
        return cast(_State, read_state(self._state_path))

    def _write_state(self, state: _State) -> None:
        write_state(self._state_path, state)

def _answers(port: int) -> bool:
    """Whether the Confluent-compatible API answers (the HTTP port opens before it is ready)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{CCOMPAT}/subjects", timeout=2.0) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def _default_cache() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    digest = hashlib.sha1(POM.read_bytes(), usedforsecurity=False).hexdigest()[:12]
    return cache / "kstream" / f"apicurio-{digest}"
