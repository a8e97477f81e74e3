"""``kstream helm values --from-broker``: partitions of existing input topics from the real broker."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml

from kstream.config import Settings
from tests.integration.kafkatools import create_topics

pytestmark = pytest.mark.integration

APP = '''
from kstream import Topology
topology = Topology("feed")

@topology.node("read", source="{source}")
def read(payload: dict) -> dict:
    return payload

@topology.node("write", after="read")
def write(payload: dict) -> dict:
    return payload
'''


def test_from_broker_reads_the_partitions_of_a_source_topic(settings: Settings, tmp_path: Path) -> None:
    # Given a source topic someone else made with 5 partitions (the settings say 3)
    source = f"ext.{uuid.uuid4().hex[:8]}"
    create_topics(settings.bootstrap_servers, source, partitions=5)
    app = tmp_path / "feed.py"
    app.write_text(APP.format(source=source))
    config = tmp_path / "kstream.toml"
    config.write_text("[topics]\npartitions = 3\n")
    # When the values are written by the console script, as a user runs it
    proc = subprocess.run(
        [sys.executable, "-m", "kstream.cli.main", "--config", str(config), "-b", settings.bootstrap_servers,
         "-n", settings.namespace, "helm", "values", f"{app}:topology", "--from-broker"],
        capture_output=True, text=True, timeout=120, env={"PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stderr
    nodes = yaml.safe_load(proc.stdout)["nodes"]
    # Then the source topic's real count is used; the missing node topic falls back to the settings
    assert nodes["read"]["partitions"] == 5
    assert nodes["write"]["partitions"] == 3
    assert nodes["write"]["topic"] == f"{settings.namespace}.feed.write"
