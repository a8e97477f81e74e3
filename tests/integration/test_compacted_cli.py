"""The Trash CLI on a large Trash: a deadline, and progress on stderr (issue 9, item 9)."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from kstream.app import admin
from kstream.config import Settings
from kstream.kafka.port import NewTopic
from kstream.trash import Attempt, TrashCodec, TrashEntry, entry_id
from tests.integration.kafkatools import produce

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
ENTRIES = 20_000


def _fill_trash(settings: Settings) -> TrashEntry:
    """``ENTRIES`` entries over 10 nodes; returns one of node n3."""
    admin(settings).create_topics([NewTopic(settings.trash_topic, 3, 1, {"cleanup.policy": "compact"})])
    codec, now = TrashCodec(), datetime.now(UTC)
    entries = [TrashEntry(id=entry_id("big", f"n{i % 10}", "src", 0, i), topology="big", node=f"n{i % 10}", reason="error",
                          error_type="ValueError", error_message=f"bad {i}", traceback="", key=b"k",
                          value=orjson.dumps({"i": i}), headers=[], topic="src", partition=0, offset=i, workflow=None,
                          attempts=(Attempt(now, "ValueError"),), first_failure=now, last_failure=now)
               for i in range(ENTRIES)]
    produce(settings.bootstrap_servers, settings.trash_topic, [(e.id, codec.encode(e)) for e in entries], raw=True)
    return entries[ENTRIES // 2 + 3]


def _kstream(settings: Settings, *args: str, tty: bool = False) -> tuple[int, str, str]:
    """The CLI as a real process; with ``tty``, its stderr is a terminal (a pty)."""
    cmd = [sys.executable, "-m", "kstream.cli.main", "-b", settings.bootstrap_servers, "-n", settings.namespace, *args]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if not tty:
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=300, check=False)
        return done.returncode, done.stdout, done.stderr
    leader, follower = pty.openpty()
    # stdout to a file: a pipe read only after stderr closes would block a long listing
    with tempfile.TemporaryFile() as out, subprocess.Popen(cmd, stdout=out, stderr=follower, env=env, cwd=ROOT) as proc:
        os.close(follower)
        err = b""
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the terminal closes when the process ends
                break
            if not chunk:
                break
            err += chunk
        proc.wait(60)
        out.seek(0)
        text = out.read().decode()
    os.close(leader)
    return proc.returncode, text, err.decode(errors="replace")


def test_a_large_trash_shows_progress_on_a_terminal_and_keeps_to_its_deadline(settings: Settings) -> None:
    # Given a Trash of 20,000 entries
    probe = _fill_trash(settings)
    # When one node's entries are listed from a terminal
    code, out, err = _kstream(settings, "trash", "list", "--node", "n3", tty=True)
    # Then the output is unchanged and stderr showed the read's progress up to the whole topic
    assert code == 0, err
    assert out.rstrip().endswith(f"{ENTRIES // 10} entries")
    assert f"reading {settings.trash_topic}: {ENTRIES:,}/{ENTRIES:,} records (100%)" in err
    # and show finds the one entry
    code, out, err = _kstream(settings, "trash", "show", probe.id)
    assert code == 0 and f"id:            {probe.id}" in out and "node:          big/n3" in out, err
    # When the deadline is shorter than the read takes: one line, exit 1
    code, out, err = _kstream(settings, "trash", "--timeout", "0.001", "list", "--node", "n3")
    assert code == 1 and out == "" and len(err.strip().splitlines()) == 1, err
    assert err.startswith("error: ") and settings.trash_topic in err
