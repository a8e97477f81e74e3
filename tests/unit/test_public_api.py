"""The public surface: a short sorted ``__all__``, and ``import kstream`` does nothing (style.md 5, 9)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import kstream

# The intended surface (design.md s.2). Growing it is a decision: add the name here too.
INTENDED = {"Context", "Emit", "KstreamError", "Page", "Permanent", "RateLimited", "Retry", "StepResult", "Topology", "Workflow"}


def test_all_is_sorted_and_unique() -> None:
    assert kstream.__all__ == sorted(set(kstream.__all__))


def test_every_exported_name_resolves_and_is_public() -> None:
    for name in kstream.__all__:
        assert not name.startswith("_"), name
        assert getattr(kstream, name, None) is not None, f"kstream.{name} is exported but missing"


def test_all_is_exactly_the_intended_surface() -> None:
    assert set(kstream.__all__) == INTENDED


def test_exported_names_come_from_their_defining_modules() -> None:
    # Re-exports, not copies: kstream.Topology is kstream.topology.Topology
    for name in kstream.__all__:
        obj = getattr(kstream, name)
        assert obj.__module__.startswith("kstream."), f"{name} is defined in {obj.__module__}"


def test_import_does_nothing() -> None:
    # Given an environment with garbage kstream settings
    env = {**os.environ, "KSTREAM_BOOTSTRAP_SERVERS": "not a broker :: ;;", "KSTREAM_NAMESPACE": "bad.ns!",
           "KSTREAM_CONFIG": "/nonexistent/kstream.toml"}
    probe = textwrap.dedent("""
        import json, logging, sys, threading
        import kstream
        loggers = [logging.root, *(lg for lg in logging.Logger.manager.loggerDict.values()
                                    if isinstance(lg, logging.Logger))]
        print(json.dumps({
            "threads": [t.name for t in threading.enumerate()],
            "handlers": [lg.name for lg in loggers if lg.handlers],
            "root_level": logging.root.level,
            "heavy": sorted(m for m in ("confluent_kafka", "click") if m in sys.modules),
        }))
    """)

    # When a fresh interpreter imports kstream
    done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=60, check=False)

    # Then it succeeds, silently, with one thread, no logging set up and no Kafka client loaded
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    seen = json.loads(done.stdout)
    assert seen["threads"] == ["MainThread"]
    assert seen["handlers"] == []
    assert seen["root_level"] == 30  # logging.WARNING, Python's default: untouched
    assert seen["heavy"] == [], "import kstream should not load the Kafka client or the CLI"
