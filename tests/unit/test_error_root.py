"""Every exception kstream raises descends from KstreamError (style.md: one error root)."""

from __future__ import annotations

import ast
import importlib
import pkgutil
import re
from pathlib import Path

import pytest

import kstream
from kstream import Context, Page, Retry, Topology
from kstream.avro import AvroSpec
from kstream.errors import (
    BadHeader,
    DeclarationError,
    DecodeError,
    InvalidRetry,
    KstreamError,
    Permanent,
    Unsettled,
    WrongOutputType,
)
from kstream.headers import ATTEMPT, HOPS, read
from kstream.testing import TopologyDriver

PACKAGE = Path(kstream.__file__).resolve().parent
# Control flow that never leaves the module that raises it: caught a few lines away.
INTERNAL = {"kstream.runtime.processor.Abandoned", "kstream.api.server._BadRequest"}
# Builtins a `raise` in kstream may still name, and why it is not a user's to meet.
ALLOWED_BUILTIN_RAISES = {
    # The in-memory consumer mirrors confluent-kafka, which raises RuntimeError("Consumer closed"):
    # the contract suite runs the same code against both adapters.
    "kstream/testing/memory.py": {"RuntimeError"},
    # A chart value of another type is a bug in `kstream helm values`, not something input can cause.
    "kstream/cli/helm.py": {"TypeError"},
    # A pydantic validator's ValueError becomes a ValidationError, which load_settings turns into ConfigError.
    "kstream/config.py": {"ValueError"},
    # A missing packaged schema file is a broken installation.
    "kstream/schemas.py": {"FileNotFoundError"},
}


def _modules() -> list[str]:
    return [m.name for m in pkgutil.walk_packages([str(PACKAGE)], prefix="kstream.")]


def test_every_exception_class_kstream_defines_descends_from_the_root() -> None:
    outside = []
    for name in _modules():
        module = importlib.import_module(name)
        for attr, value in vars(module).items():
            if (isinstance(value, type) and issubclass(value, BaseException) and value.__module__ == name
                    and f"{name}.{attr}" not in INTERNAL and not issubclass(value, KstreamError)):
                outside.append(f"{name}.{attr}")
    assert outside == []


def test_no_builtin_exception_is_raised_outside_the_listed_places() -> None:
    builtin = re.compile(r"^(ValueError|TypeError|RuntimeError|KeyError|LookupError|OSError|FileNotFoundError|Exception)$")
    found: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE.parent).as_posix()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call) and isinstance(node.exc.func, ast.Name):
                if builtin.match(node.exc.func.id):
                    found.setdefault(rel, set()).add(node.exc.func.id)
    assert found == ALLOWED_BUILTIN_RAISES


@pytest.mark.parametrize("kwargs", [{"attempts": 0}, {"backoff": -1.0}, {"max_backoff": -1.0}, {"jitter": -0.1},
                                    {"timeout": 0.0}])
def test_retry_out_of_range_is_a_declaration_error_and_still_a_value_error(kwargs: dict[str, float]) -> None:
    with pytest.raises(InvalidRetry) as caught:
        Retry(**kwargs)  # type: ignore[arg-type]
    assert isinstance(caught.value, DeclarationError)
    assert isinstance(caught.value, ValueError)


def test_a_header_out_of_range_is_a_decode_error_and_still_a_value_error() -> None:
    with pytest.raises(BadHeader) as caught:
        read([(HOPS, b"-1"), (ATTEMPT, b"1")], "t", 0, 0)
    assert isinstance(caught.value, DecodeError)
    assert isinstance(caught.value, ValueError)
    assert caught.value.reason == "decode"


def test_a_wrong_avro_output_type_is_permanent_and_still_a_type_error() -> None:
    spec = AvroSpec.__new__(AvroSpec)
    with pytest.raises(WrongOutputType) as caught:
        spec.to_record([1, 2])
    assert isinstance(caught.value, Permanent)
    assert isinstance(caught.value, TypeError)


def test_a_batch_handler_returning_no_page_goes_to_the_trash_without_retries() -> None:
    # Given a batch node whose handler returns a list instead of a Page
    topology = Topology("sync")
    calls: list[object] = []

    @topology.batch("fetch", every="10m", to="out", retry=Retry(attempts=3, backoff=0))
    def fetch(cursor: str | None, ctx: Context) -> Page:
        calls.append(cursor)
        return [1, 2]  # type: ignore[return-value]

    # When its schedule fires
    with TopologyDriver(topology) as driver:
        driver.advance(600)
        # Then the message is trashed as WrongOutputType on the first try (retrying cannot fix it)
        [entry] = driver.trash()
        assert driver.outputs("out") == []
    assert entry.error_type == "WrongOutputType"
    assert "returns kstream.Page, not list" in entry.error_message
    assert len(calls) == 1


def test_the_drivers_loop_error_is_under_the_root_and_still_a_runtime_error() -> None:
    assert issubclass(Unsettled, KstreamError) and issubclass(Unsettled, RuntimeError)
