"""Every error kstream raises, under one root.

The tree::

    KstreamError                      root; ``retryable`` says whether trying again may help
    ├── ConfigError                   settings that make no sense (bad value, unreadable file)
    ├── DeclarationError              a topology that cannot exist (cycle, unknown ``after``, bad name)
    │   └── InvalidRetry              ``Retry(...)`` out of range (also a ``ValueError``)
    ├── AppLoadError                  ``APP`` (``module:attr`` / ``file.py:attr``) cannot be loaded
    ├── BrokerError                   talking to Kafka failed
    │   ├── BrokerUnavailable         no broker answered in time (retryable)
    │   ├── AccessDenied              a failed login (credentials, TLS trust) or a missing ACL: stops the node
    │   ├── DeliveryFailed            the broker did not acknowledge an output (retryable)
    │   └── TransactionInDoubt        a transactional call timed out or its outcome is unknown:
    │                                 the producer must be replaced (epoch bump) before writing on
    ├── LocalBrokerError              the embedded development broker could not be run
    ├── RegistryError                 the schema registry refused or did not answer (retryable then)
    ├── Permanent                     raised by handlers: do not retry, send to the Trash
    │   ├── DecodeError               a payload that cannot be decoded or validated
    │   │   └── BadHeader             a kstream header out of range (also a ``ValueError``)
    │   ├── EncodeError               an output that does not fit its topic's schema
    │   ├── WrongOutputType           a handler returned a type its node cannot write (also a ``TypeError``)
    │   └── HopLimitExceeded          a message passed more nodes than ``hop_limit``: most likely a loop
    ├── RateLimited                   raised by handlers on a 429: slow the service down, retry
    ├── TrashFlood                    too much of a node's input went to the Trash: stop the node
    ├── NotFound                      an id, node, scope or topic that does not exist
    └── Unsettled                     ``TopologyDriver.run`` still moving after its passes: a loop
                                      (also a ``RuntimeError``)

Where callers may rely on a builtin (``except ValueError`` around ``Retry(...)``, ``except
TypeError``), the class derives from both the kstream class and the builtin, so old ``except``
clauses keep working.

Errors carry data as attributes (``node``, ``topic``, ``partition``, ``offset``, ``reason``) so
callers can act on them without parsing messages.
"""

from __future__ import annotations


class KstreamError(Exception):
    """Root of all kstream errors."""

    retryable: bool = False


class ConfigError(KstreamError):
    """A setting is missing, malformed or contradictory."""


class DeclarationError(KstreamError):
    """A topology declaration is invalid; the message names the node."""

    def __init__(self, message: str, *, node: str | None = None) -> None:
        super().__init__(message)
        self.node = node


class InvalidRetry(DeclarationError, ValueError):
    """``Retry(...)`` with a value out of range (attempts below 1, a negative backoff...)."""


class AppLoadError(KstreamError):
    """The ``APP`` argument does not point at a loadable Topology."""


class BrokerError(KstreamError):
    """An operation against Kafka failed."""

    def __init__(self, message: str, *, code: str | None = None, retryable: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.retryable = retryable


class BrokerUnavailable(BrokerError):
    """No broker answered within the timeout."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code="TRANSPORT", retryable=True)


class AccessDenied(BrokerError):
    """The broker refused this client: wrong credentials, a certificate it cannot trust, or a
    missing ACL (the message names the right). Retrying cannot help: the node stops."""


class DeliveryFailed(BrokerError):
    """An output record was not acknowledged; its input offset must not be committed."""

    def __init__(self, message: str, *, topic: str, code: str | None = None) -> None:
        super().__init__(message, code=code, retryable=True)
        self.topic = topic


class TransactionInDoubt(BrokerError):
    """A commit (or another transactional call) timed out or failed ambiguously.

    The transaction may still be open on the broker, or its markers half written. The producer
    that raised it must not write again: the worker discards it without an abort (an abort sent
    while partitions have no leader is what leaves a transaction hanging) and a new producer with
    the same ``transactional.id`` fences it and aborts what it left open (its ``InitProducerId``
    bumps the epoch) once the cluster has leaders again.
    """

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message, code=code, retryable=True)


class LocalBrokerError(KstreamError):
    """The embedded development broker could not be prepared, started or stopped."""


class Permanent(KstreamError):
    """Raise from a handler for an error that retrying cannot fix: the message goes to the Trash."""


class DecodeError(Permanent):
    """A payload could not be decoded, or failed validation against the node's model."""

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class BadHeader(DecodeError, ValueError):
    """A kstream header of an input record is out of range (negative hops, attempt below 1)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, reason="decode")


class EncodeError(Permanent):
    """An output value does not fit the Avro schema of the topic it goes to."""


class WrongOutputType(Permanent, TypeError):
    """A handler returned something its node cannot write: a batch handler not a ``Page``, an
    Avro output neither a pydantic model nor a dict. Retrying the same code cannot fix it."""


class HopLimitExceeded(Permanent):
    """A message passed more nodes than ``hop_limit``: most likely a loop."""


class RegistryError(KstreamError):
    """The schema registry refused a request (an incompatible schema) or did not answer."""

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


class RateLimited(KstreamError):
    """Raise from a handler when the external service answered "too many requests".

    The node's rate limiter lowers the service's share (recovering gradually), and the
    message is tried again after ``retry_after`` seconds (or the limiter's backoff).
    """

    retryable = True

    def __init__(self, message: str = "rate limited", *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class TrashFlood(KstreamError):
    """Too large a share of a node's input failed: the node stops instead of draining into Trash."""

    def __init__(self, message: str, *, node: str) -> None:
        super().__init__(message)
        self.node = node


class NotFound(KstreamError):
    """A named thing (trash entry, node, cursor scope, topic) does not exist."""


class Unsettled(KstreamError, RuntimeError):
    """The in-memory ``TopologyDriver`` kept moving records after its last pass: a loop."""
