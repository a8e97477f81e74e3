"""What every command shares: settings from flags, one-line errors, APP loading."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from kstream.config import Settings, load_settings
from kstream.dev.broker import BrokerInfo
from kstream.errors import ConfigError, KstreamError
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


class KstreamGroup(click.Group):
    """Turns every :class:`KstreamError` into one line on stderr and exit code 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KstreamError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)


pass_options = click.make_pass_decorator(Options, ensure=True)


def app_argument(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.argument("app", metavar="APP")(fn)


def topology_of(app: str) -> Topology:
    return load_topology(app)

