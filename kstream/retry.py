"""Retry policy of a node."""

from __future__ import annotations

import random
from dataclasses import dataclass

from kstream.errors import InvalidRetry


@dataclass(frozen=True, slots=True)
class Retry:
    """How often and how patiently a failing message is tried again.

    ``attempts`` counts every try including the first (1 = no retry). The wait before try
    ``n+1`` is ``backoff * 2**(n-1)``, capped at ``max_backoff``, with up to ``jitter`` (a
    fraction) added at random. Only exceptions of the types in ``on`` are retried;
    :class:`kstream.Permanent` and decoding/validation errors never are. ``timeout`` (seconds)
    cancels an async attempt that hangs and counts it as failed. Values out of range raise
    :class:`kstream.errors.InvalidRetry` (a ``DeclarationError`` and a ``ValueError``).
    """

    attempts: int = 3
    backoff: float = 0.5
    max_backoff: float = 30.0
    jitter: float = 0.1
    on: tuple[type[BaseException], ...] = (Exception,)
    timeout: float | None = None

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise InvalidRetry("Retry.attempts must be at least 1")
        if self.backoff < 0 or self.max_backoff < 0 or self.jitter < 0:
            raise InvalidRetry("Retry backoff, max_backoff and jitter must not be negative")
        if self.timeout is not None and self.timeout <= 0:
            raise InvalidRetry("Retry.timeout must be positive")

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after failed try number ``attempt`` (1-based)."""
        base = min(self.max_backoff, self.backoff * (2 ** (attempt - 1)))
        return float(base * (1 + self.jitter * (rng or random).random()))


NO_RETRY = Retry(attempts=1)
