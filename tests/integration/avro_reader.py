"""A Java consumer that reads Avro through the schema registry (tests/tools/avro-reader).

kcat from Debian is built without Avro support (its libserdes is not packaged), so the
registry-aware reader of these tests is Java: Apicurio's own Kafka deserializer, from Maven
Central, run from source by Java's single-file launcher. Its classpath is fetched once into
~/.cache/kstream, keyed by its pom.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path
from typing import Any

from kstream.dev.broker import maven_copy, move_into_place
from kstream.dev.registry import CCOMPAT

TOOL = Path(__file__).resolve().parents[1] / "tools" / "avro-reader"


def _libs() -> Path:
    pom = TOOL / "pom.xml"
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "kstream"
    libs = cache / f"avro-reader-{hashlib.sha1(pom.read_bytes(), usedforsecurity=False).hexdigest()[:12]}"
    if not libs.is_dir():
        with maven_copy(pom, cache, what="the Avro reader's jars") as download:
            move_into_place(download, libs)
    return libs


def read_avro_java(bootstrap: str, topic: str, count: int, registry_url: str) -> list[dict[str, Any]]:
    """``count`` values of ``topic`` as a Java client decodes them through the registry."""
    native = registry_url.replace(CCOMPAT, "/apis/registry/v2")
    out = subprocess.run(
        ["java", "-Xmx256m", "-cp", f"{_libs()}/*", str(TOOL / "AvroRead.java"), bootstrap, topic, str(count), native],
        capture_output=True, text=True, timeout=180, check=False,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
