"""``kstream console APP``: the operator console alone (``kstream serve --console`` adds it to the API)."""

from __future__ import annotations

from pathlib import Path

import click

from kstream import logs
from kstream.app import ack_producer, cursor_reader, tail_consumer
from kstream.cli.common import Options, app_argument, pass_options, topology_of
from kstream.cli.serving import read_token, run_server
from kstream.errors import AppLoadError, ConfigError
from kstream.loader import load_workflows


@click.command()
@app_argument
@click.option("--workflows", "workflows_app", metavar="APP",
              help="Also show the workflows of this APP (module or module:attr); default: those of APP, if any.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8081, show_default=True, type=int)
@click.option("--token-file", type=click.Path(path_type=Path, dir_okay=False),
              help="File holding the token (a mounted secret); or env KSTREAM_API_TOKEN. Without either: no auth.")
@click.option("--log-level", default="info", show_default=True, type=click.Choice(["debug", "info", "warning", "error"]))
@pass_options
def console(options: Options, app: str, workflows_app: str | None, host: str, port: int,  # noqa: PLR0917
            token_file: Path | None, log_level: str) -> None:
    """Serve the operator console of topology APP (needs the extra: pip install 'kstream[api]').

    Pages: the topology with live lag, rates, in-flight and Trash counts; the Trash (filter,
    inspect, edit, replay, discard); workflows (list, timeline, cancel, retry); batch cursors
    (reset). With a token, every page needs it: sign in with the form, or send
    ``Authorization: Bearer <token>``. Writes need the form's CSRF token.
    """
    try:
        from kstream.api.server import Kafka, create_app
        from kstream.console.app import create_console
    except ImportError as exc:
        raise ConfigError(f"kstream console needs the api extra (pip install 'kstream[api]'): {exc}") from None
    logs.setup(log_level)
    topology = topology_of(app)
    try:
        workflows = load_workflows(workflows_app or app)
    except AppLoadError:
        if workflows_app is not None:
            raise
        workflows = []
    settings = options.settings()
    token = read_token(token_file)
    api_app = None
    if workflows:
        kafka = Kafka(ack_producer(settings), cursor_reader(settings), lambda: tail_consumer(settings, "console"),
                      settings.namespace)
        api_app = create_app(workflows, kafka, token=token)

    run_server(create_console(topology, settings, token=token, workflows=api_app), host, port,
               f"console of {topology.name} on http://{host}:{port}")
