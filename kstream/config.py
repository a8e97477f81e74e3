"""Settings: read once at the edge (the CLI or the user's ``main``) into frozen models.

Sources, later ones winning: defaults, a TOML file (``--config`` / ``KSTREAM_CONFIG``), the
environment (``KSTREAM_BOOTSTRAP_SERVERS``, ``KSTREAM_NAMESPACE``, ``KSTREAM_KAFKA_<PROP>``),
then explicit overrides (CLI flags, ``-X prop=value``). Nothing here runs at import.

File layout::

    bootstrap_servers = "127.0.0.1:9092"
    namespace = "kstream"
    hop_limit = 100

    [topics]                         # defaults for every node input topic
    partitions = 6
    replication_factor = 3           # default: the cluster's default.replication.factor
    config = { "retention.ms" = "604800000" }

    [topics.nodes."orders.parse"]    # per node ("topology.node") overrides
    partitions = 12

    [limits.erp]                     # a global rate limit, for nodes with limit="erp"
    rate = 50
    per = "1s"

    [kafka]                          # any librdkafka property, passed through
    "security.protocol" = "PLAINTEXT"
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from kstream.errors import ConfigError, DeclarationError
from kstream.naming import check_name

DEFAULT_BOOTSTRAP = "127.0.0.1:9092"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TopicSpec(_Frozen):
    """How one topic should look; ``None`` leaves a value to the defaults."""

    partitions: int | None = Field(default=None, ge=1)
    replication_factor: int | None = Field(default=None, ge=1)
    config: dict[str, str] = Field(default_factory=dict)


class TopicSettings(_Frozen):
    partitions: int = Field(default=6, ge=1)
    replication_factor: int | None = Field(default=None, ge=1)
    """None: topics are created with the cluster's ``default.replication.factor``."""
    config: dict[str, str] = Field(default_factory=dict)
    nodes: dict[str, TopicSpec] = Field(default_factory=dict)
    """Overrides per node, keyed ``"topology.node"``."""

    def for_node(self, topology: str, node: str) -> tuple[int, int | None, dict[str, str]]:
        """Partitions, replication factor and configs for a node's input topic."""
        spec = self.nodes.get(f"{topology}.{node}", TopicSpec())
        return (
            spec.partitions or self.partitions,
            spec.replication_factor or self.replication_factor,
            {**self.config, **spec.config},
        )


class RuntimeSettings(_Frozen):
    batch_size: int = Field(default=500, ge=1)
    """Messages taken from the consumer per poll."""
    buffer_size: int = Field(default=5000, ge=1)
    """Messages a prefetch-N worker holds (queued + in flight) before it pauses its partitions;
    it resumes at half. Resuming restarts librdkafka's fetching, which takes a while: half a
    buffer of work must cover it, or a backlog drains in stalls (at 1,000 it ran at a quarter
    of the speed)."""
    poll_timeout: float = Field(default=0.1, gt=0)
    commit_interval: float = Field(default=1.0, gt=0)
    """Seconds between commits; each commit first waits for all outputs to be acknowledged."""
    transaction_interval: float = Field(default=0.1, gt=0)
    """Exactly-once nodes: seconds between transaction commits (amortises their fixed cost)."""
    shutdown_timeout: float = Field(default=10.0, gt=0)
    """How long a stopping worker lets the message in hand finish before abandoning it."""
    flood_share: float = Field(default=0.5, gt=0, le=1)
    """A node stops when more than this share of its recent messages went to the Trash..."""
    flood_window: int = Field(default=1000, ge=1)
    """...counted over this many most recent messages..."""
    flood_min: int = Field(default=100, ge=1)
    """...once at least this many were seen."""
    broker_outage_timeout: float = Field(default=300.0, gt=0)
    """How long a worker waits for the cluster to come back (e.g. to replace a transactional
    producer whose commit timed out) before it stops with one line."""
    hanging_check_interval: float = Field(default=10.0, gt=0)
    """Seconds between checks of the last stable offsets of a process's topics (hanging transactions)."""
    hanging_after: float = Field(default=90.0, gt=0)
    """A partition whose last stable offset stays at one offset behind its high watermark for this
    long holds an open transaction nobody will end (a hanging transaction): reported loudly.
    Keep it above the longest ``transaction.timeout.ms`` of any producer of the topics (kstream's
    is 60 s) plus a margin; a live transaction is never open longer than its timeout."""


class LimitSpec(_Frozen):
    """A global rate limit: at most ``rate`` calls per ``per`` seconds, across every worker."""

    rate: float = Field(gt=0)
    per: float = Field(default=1.0, gt=0)

    @field_validator("per", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        return parse_duration(value) if isinstance(value, str) else value


def parse_duration(text: str) -> float:
    """``"250ms"``, ``"1s"``, ``"10m"``, ``"2h"``, ``"1d"`` or a plain number of seconds."""
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
    text = text.strip()
    for unit in ("ms", "s", "m", "h", "d"):
        if text.endswith(unit) and text[: -len(unit)].replace(".", "", 1).isdigit():
            return float(text[: -len(unit)]) * units[unit]
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a duration (e.g. 500ms, 1s, 10m, 2h)") from None


class Settings(_Frozen):
    bootstrap_servers: str = DEFAULT_BOOTSTRAP
    namespace: str = "kstream"
    hop_limit: int = Field(default=100, ge=1)
    topics: TopicSettings = Field(default_factory=TopicSettings)
    runtime: RuntimeSettings = Field(default_factory=RuntimeSettings)
    kafka: dict[str, str] = Field(default_factory=dict)
    """librdkafka properties passed to every client, after kstream's own defaults."""
    limits: dict[str, LimitSpec] = Field(default_factory=dict)
    """Global rate limits by service name, used by nodes declared with ``limit="name"``."""

    @field_validator("namespace")
    @classmethod
    def _namespace_is_a_topic_prefix(cls, value: str) -> str:
        try:
            check_name(value, what="namespace")
        except DeclarationError as exc:
            raise ValueError(str(exc)) from None
        return value

    @field_validator("kafka", mode="before")
    @classmethod
    def _stringify(cls, value: Any) -> Any:
        if isinstance(value, Mapping):
            return {str(k): _kafka_value(v) for k, v in value.items()}
        return value

    @property
    def trash_topic(self) -> str:
        return f"{self.namespace}.trash"

    @property
    def cursors_topic(self) -> str:
        return f"{self.namespace}.cursors"

    @property
    def status_topic(self) -> str:
        return f"{self.namespace}.status"


def _kafka_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def load_settings(
    path: Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Build :class:`Settings` from file, environment and overrides; :class:`ConfigError` if bad."""
    env = os.environ if environ is None else environ
    data: dict[str, Any] = {}
    file = path or (Path(env["KSTREAM_CONFIG"]) if env.get("KSTREAM_CONFIG") else None)
    if file is not None:
        try:
            data = tomllib.loads(file.read_text())
        except OSError as exc:
            raise ConfigError(f"cannot read config file {file}: {exc.strerror}") from None
        except UnicodeDecodeError as exc:
            raise ConfigError(f"config file {file} is not UTF-8 text: {exc.reason}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {file} is not valid TOML: {exc}") from None
    if env.get("KSTREAM_BOOTSTRAP_SERVERS"):
        data["bootstrap_servers"] = env["KSTREAM_BOOTSTRAP_SERVERS"]
    if env.get("KSTREAM_NAMESPACE"):
        data["namespace"] = env["KSTREAM_NAMESPACE"]
    file_kafka = data.get("kafka", {})
    if not isinstance(file_kafka, Mapping):
        raise ConfigError("invalid setting kafka: must be a table of librdkafka properties")
    kafka = dict(file_kafka)
    for name, value in env.items():
        if name.startswith("KSTREAM_KAFKA_"):
            kafka[name.removeprefix("KSTREAM_KAFKA_").lower().replace("_", ".")] = value
    for key, value in (overrides or {}).items():
        if key == "kafka":
            kafka.update(value)
        elif value is not None:
            data[key] = value
    data["kafka"] = kafka
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "settings"
        raise ConfigError(f"invalid setting {where}: {first['msg']}") from None
