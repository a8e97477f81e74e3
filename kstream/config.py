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
    "security.protocol" = "SASL_SSL"
    "sasl.mechanism" = "SCRAM-SHA-512"
    "sasl.username" = "orders"
    "sasl.password.file" = "/var/run/secrets/kafka/password"   # or KSTREAM_KAFKA_SASL_PASSWORD

    [schema_registry]                # for Avro nodes (kstream[avro]); env KSTREAM_SCHEMA_REGISTRY_URL
    url = "http://127.0.0.1:8081"    # Apicurio: http://HOST:PORT/apis/ccompat/v7
    username = "..."                 # basic auth, optional (env KSTREAM_SCHEMA_REGISTRY_USERNAME/_PASSWORD)
    subject_strategy = "topic"       # "topic" (TOPIC-value), "record", "topic_record"
    compatibility = "BACKWARD"       # the mode set on subjects kstream creates

    [observe]                        # kstream run: /metrics /healthz /readyz, logs, tracing
    http_port = 9100
    log_format = "json"

Secrets: any ``[kafka]`` property may instead be read from a file named by ``<prop>.file``
(``KSTREAM_KAFKA_SASL_PASSWORD_FILE`` in the environment), e.g. a mounted Kubernetes Secret.
Properties that hold secrets (:func:`is_secret`) are kept apart, as ``SecretStr``, in
``Settings.kafka_secrets``: they print as ``**********`` and only :meth:`Settings.client_properties`
(what the clients are given) reveals them.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from kstream.avro import Compatibility
from kstream.errors import ConfigError, DeclarationError
from kstream.naming import check_name

SubjectStrategy = Literal["topic", "record", "topic_record"]

DEFAULT_BOOTSTRAP = "127.0.0.1:9092"
ENV_KAFKA_PREFIX = "KSTREAM_KAFKA_"
FILE_SUFFIX = ".file"
# librdkafka properties whose values are secrets; anything named *password* or *secret* is too.
_SECRET_PROPERTIES = frozenset({
    "sasl.password", "ssl.key.pem", "ssl_key", "ssl.keystore.password", "ssl.key.password",
    "sasl.oauthbearer.config", "sasl.oauthbearer.client.secret", "sasl.oauthbearer.assertion.private.key.pem",
    "sasl.oauthbearer.assertion.private.key.passphrase",
})


def is_secret(prop: str) -> bool:
    """Whether the librdkafka property ``prop`` holds a secret (never printed, never in argv)."""
    return prop in _SECRET_PROPERTIES or "password" in prop or "secret" in prop


def env_name(prop: str) -> str:
    """The environment variable that sets the librdkafka property ``prop``."""
    return ENV_KAFKA_PREFIX + prop.upper().replace(".", "_")


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
    transaction_early: float = Field(default=0.02, ge=0)
    """Exactly-once nodes: a transaction with work in it also commits as soon as no input waits,
    once this many seconds passed since the last commit. Each hop then adds about this (plus the
    commit) instead of up to ``transaction_interval`` to a record's latency, on a stream that is
    not saturated (a backlog always has input waiting: full-length transactions). The cost: up
    to 1 / this transactions a second per worker while input trickles in. 0: commit every
    ``transaction_interval`` only."""
    shutdown_timeout: float = Field(default=20.0, gt=0)
    """The budget of a clean stop (SIGTERM): the messages in hand finish (or are abandoned,
    uncommitted), outputs are flushed, offsets committed, the groups left, all within it.
    20 s: under Kubernetes' default 30 s grace period."""
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
    liveness_timeout: float = Field(default=60.0, gt=0)
    """``/healthz`` fails when a worker's poll loop has not turned for this many seconds."""


class ObserveSettings(_Frozen):
    """The worker's HTTP endpoint, log format and tracing (``[observe]`` in the file)."""

    http_port: int | None = Field(default=None, ge=0, le=65535)
    """Port of ``/metrics``, ``/healthz`` and ``/readyz`` of ``kstream run``; None: no endpoint."""
    http_host: str = "0.0.0.0"  # noqa: S104  (a pod's probes and Prometheus come from outside)
    log_format: Literal["text", "json"] = "text"
    tracing: Literal["auto", "off"] = "auto"
    """auto: spans through OpenTelemetry when ``opentelemetry-api`` is installed (``kstream[otel]``)."""
    probe_interval: float = Field(default=5.0, gt=0)
    """Seconds between two reads of the cluster: lag metrics, and readiness (reachable or not)."""


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


class RegistrySettings(_Frozen):
    """The schema registry that Avro nodes and ``kstream schemas`` use (Confluent REST API)."""

    url: str
    username: str | None = None
    password: SecretStr | None = None
    subject_strategy: SubjectStrategy = "topic"
    """How a topic's subject is named: ``topic`` (``TOPIC-value``), ``record`` (the record's
    full name) or ``topic_record`` (``TOPIC-RECORD``)."""
    compatibility: Compatibility = "BACKWARD"
    """The mode ``schemas apply`` sets on subjects it creates; existing subjects keep theirs."""
    auto_register: bool = False
    """Let workers register schemas themselves; by default ``schemas apply`` does, after checks."""


class Settings(_Frozen):
    bootstrap_servers: str = DEFAULT_BOOTSTRAP
    namespace: str = "kstream"
    hop_limit: int = Field(default=100, ge=1)
    topics: TopicSettings = Field(default_factory=TopicSettings)
    runtime: RuntimeSettings = Field(default_factory=RuntimeSettings)
    observe: ObserveSettings = Field(default_factory=ObserveSettings)
    kafka: dict[str, str] = Field(default_factory=dict)
    """librdkafka properties passed to every client, after kstream's own defaults (secrets
    given here are moved to :attr:`kafka_secrets`)."""
    kafka_secrets: dict[str, SecretStr] = Field(default_factory=dict)
    """The librdkafka properties that are secrets (:func:`is_secret`): redacted when printed."""
    limits: dict[str, LimitSpec] = Field(default_factory=dict)
    """Global rate limits by service name, used by nodes declared with ``limit="name"``."""
    schema_registry: RegistrySettings | None = None
    """Needed by topologies with Avro nodes."""

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

    @model_validator(mode="before")
    @classmethod
    def _separate_secrets(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and isinstance(data.get("kafka"), Mapping):
            kafka = data["kafka"]
            secrets = {k: _kafka_value(v) for k, v in kafka.items() if is_secret(str(k))}
            if secrets:
                plain = {k: v for k, v in kafka.items() if k not in secrets}
                data = {**data, "kafka": plain, "kafka_secrets": {**data.get("kafka_secrets", {}), **secrets}}
        return data

    def client_properties(self) -> dict[str, str]:
        """The librdkafka properties every client gets, secrets revealed: hand them only to a client."""
        return {**self.kafka, **{k: v.get_secret_value() for k, v in self.kafka_secrets.items()}}

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


def _registry_from_env(data: dict[str, Any], env: Mapping[str, str]) -> None:
    fields = {"url": "KSTREAM_SCHEMA_REGISTRY_URL", "username": "KSTREAM_SCHEMA_REGISTRY_USERNAME",
              "password": "KSTREAM_SCHEMA_REGISTRY_PASSWORD"}
    given = {name: env[var] for name, var in fields.items() if env.get(var)}
    if given:
        registry = data.get("schema_registry")
        data["schema_registry"] = {**(registry if isinstance(registry, Mapping) else {}), **given}


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
    _registry_from_env(data, env)
    file_kafka = data.get("kafka", {})
    if not isinstance(file_kafka, Mapping):
        raise ConfigError("invalid setting kafka: must be a table of librdkafka properties")
    kafka: dict[str, Any] = {}
    _put_kafka(kafka, file_kafka)
    _put_kafka(kafka, {
        name.removeprefix(ENV_KAFKA_PREFIX).lower().replace("_", "."): value
        for name, value in env.items() if name.startswith(ENV_KAFKA_PREFIX)
    })
    for key, value in (overrides or {}).items():
        if key == "kafka":
            _put_kafka(kafka, value)
        elif value is not None:
            data[key] = value
    data["kafka"] = _read_files(kafka)
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "settings"
        raise ConfigError(f"invalid setting {where}: {first['msg']}") from None


def _put_kafka(kafka: dict[str, Any], props: Mapping[str, Any]) -> None:
    """Add ``props`` (a later source) to ``kafka``: ``X`` and ``X.file`` replace each other."""
    for name, value in props.items():
        other = name.removesuffix(FILE_SUFFIX) if name.endswith(FILE_SUFFIX) else name + FILE_SUFFIX
        kafka.pop(other, None)
        kafka[name] = value


def _read_files(kafka: Mapping[str, Any]) -> dict[str, Any]:
    """Replace each ``X.file`` by property ``X`` holding the file's text (one trailing newline
    dropped: ``echo secret > file`` and Kubernetes Secrets both end in one, or none)."""
    out: dict[str, Any] = {}
    for name, value in kafka.items():
        if not name.endswith(FILE_SUFFIX):
            out[name] = value
            continue
        path = Path(str(value)).expanduser()
        try:
            text = path.read_text()
        except OSError as exc:
            raise ConfigError(f"cannot read {name} {path}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise ConfigError(f"{name} {path} is not UTF-8 text") from None
        out[name.removesuffix(FILE_SUFFIX)] = text.removesuffix("\n").removesuffix("\r")
    return out
