"""What ``kstream serve`` and ``kstream console`` share: the token, and uvicorn run until a signal."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import click

from kstream.errors import ConfigError


def read_token(token_file: Path | None) -> str | None:
    """The bearer token: the file (a mounted secret) wins over env KSTREAM_API_TOKEN; None: no auth."""
    token = os.environ.get("KSTREAM_API_TOKEN") or None
    if token_file is not None:
        try:
            token = token_file.read_text().strip() or None
        except OSError as exc:
            raise ConfigError(f"cannot read the token file {token_file}: {exc.strerror}") from None
    return token


def run_server(app: Any, host: str, port: int, banner: str) -> None:
    """Serve the ASGI ``app`` until SIGINT or SIGTERM (no access log: requests are not logged)."""
    import uvicorn

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    server = Server(uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False))

    def request_stop(signum: int, frame: FrameType | None) -> None:
        server.should_exit = True

    # Our handlers, not uvicorn's: uvicorn re-raises the signal after its shutdown, and a clean
    # stop must exit 0 like `kstream run`.
    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    click.echo(banner, err=True)
    server.run()
    click.echo("stopped", err=True)
