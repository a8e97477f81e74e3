"""What every command shares: settings from flags, one-line errors, APP loading."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from kstream.app import check_client_settings
from kstream.config import Settings, load_settings
from kstream.dev.broker import BrokerInfo
from kstream.errors import BrokerError, ConfigError, KstreamError
from kstream.loader import load_topology
from kstream.topology import Topology

BROKER_DIR = Path(".kstream/broker")


@dataclass
class Options:
    """Global flags, turned into :class:`Settings` only by commands that need them."""

    config: Path | None = None
    bootstrap: str | None = None
    namespace: str | None = None
    kafka: dict[str, str] = field(default_factory=dict)
    _settings: Settings | None = None

    def settings(self) -> Settings:
        if self._settings is None:
            overrides: dict[str, Any] = {"namespace": self.namespace, "kafka": self.kafka}
            settings = load_settings(self.config, overrides={**overrides, "bootstrap_servers": self.bootstrap})
            if not (self.bootstrap or _configured_bootstrap(self.config)):
                local = _local_broker()
                if local:
                    settings = settings.model_copy(update={"bootstrap_servers": local.bootstrap})
                    if local.client_config is not None and "security.protocol" not in settings.kafka:
                        raise ConfigError(f"the local broker at {local.bootstrap} is secured: "
                                          f"pass --config {local.client_config} (its super user) or your own settings")
            check_client_settings(settings)
            self._settings = settings
        return self._settings


def _configured_bootstrap(config: Path | None) -> bool:
    import os

    if os.environ.get("KSTREAM_BOOTSTRAP_SERVERS"):
        return True
    path = config or (Path(os.environ["KSTREAM_CONFIG"]) if os.environ.get("KSTREAM_CONFIG") else None)
    return path is not None and "bootstrap_servers" in load_settings(path, environ={}).model_fields_set


def _local_broker() -> BrokerInfo | None:
    """The local development broker started from this folder, if it runs."""
    from kstream.dev.broker import LocalBroker

    return LocalBroker(BROKER_DIR).status()


class _ClientErrors(logging.Handler):
    """Keeps librdkafka's last error-level log line: the cause behind a broker error that only
    says "transport failure" or "timed out" (an authentication or TLS failure, a refused
    connection). Being a handler, it also keeps librdkafka's lines off a command's stderr
    (Python's last-resort handler would print each); ``kstream run`` logs them as usual."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.last: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        # "FAIL [rdkafka#consumer-1] [thrd:...]: sasl_plaintext://host:port/bootstrap: the cause"
        self.last = record.getMessage().rsplit("]: ", 1)[-1].strip()


def _usage_error(exc: click.UsageError) -> None:
    """One line and exit 2 (click prints the usage synopsis and a hint around it otherwise)."""
    if type(exc).__name__ == "NoArgsIsHelpError":  # no arguments at all: click shows the help
        raise exc
    where = f"kstream {exc.ctx.command_path.removeprefix('kstream').strip()}".strip() if exc.ctx else "kstream"
    click.echo(f"error: {exc.format_message()} (see `{where} -h`)", err=True)
    sys.exit(exc.exit_code)


class KstreamGroup(click.Group):
    """Turns every :class:`KstreamError` into one line on stderr and exit code 1, and every
    usage error (a bad flag, a missing argument) into one line and exit code 2."""

    def make_context(self, info_name: str | None, args: list[str], parent: click.Context | None = None,
                     **extra: Any) -> click.Context:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.UsageError as exc:
            _usage_error(exc)
            raise  # unreachable: _usage_error exits

    def invoke(self, ctx: click.Context) -> Any:
        client_log = logging.getLogger("kstream.librdkafka")
        client_errors = _ClientErrors()
        client_log.addHandler(client_errors)
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:
            _usage_error(exc)
        except KstreamError as exc:
            cause = client_errors.last if isinstance(exc, BrokerError) else None
            click.echo(f"error: {exc}" + (f" (Kafka client: {cause})" if cause and cause not in str(exc) else ""), err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)
        finally:
            client_log.removeHandler(client_errors)


pass_options = click.make_pass_decorator(Options, ensure=True)


def app_argument(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.argument("app", metavar="APP")(fn)


def topology_of(app: str) -> Topology:
    return load_topology(app)

