"""When an exactly-once worker's transaction may commit early (no broker: the decision only)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

from kstream.config import RuntimeSettings
from kstream.runtime.committer import Committer


def _committer(settings: RuntimeSettings, *, exactly_once: bool = True) -> tuple[Committer, SimpleNamespace]:
    strategy = SimpleNamespace(processed=0)
    none = cast(Any, None)
    committer = Committer("n", none, none, cast(Any, strategy), none, settings=settings, topic="in", owned=set(),
                          hold=lambda: None, stop_deadline=lambda: None,
                          transactions=cast(Any, object()) if exactly_once else None, status=None)
    return committer, strategy


def test_by_default_a_transaction_with_work_commits_early_once_20_ms_passed() -> None:
    committer, strategy = _committer(RuntimeSettings())
    start = committer._last
    assert not committer.early(start + 1.0)  # nothing processed since the last commit: nothing to show
    strategy.processed = 3
    assert not committer.early(start + 0.019)
    assert committer.early(start + 0.021)
    assert not committer.due(start + 0.021)  # the interval (100 ms) has not passed


def test_transaction_early_0_commits_every_interval_only() -> None:
    committer, strategy = _committer(RuntimeSettings(transaction_early=0))
    strategy.processed = 3
    assert not committer.early(committer._last + 0.09)
    assert committer.due(committer._last + 0.101)


def test_at_least_once_never_commits_early() -> None:
    committer, strategy = _committer(RuntimeSettings(), exactly_once=False)
    strategy.processed = 3
    assert not committer.early(committer._last + 0.5)
