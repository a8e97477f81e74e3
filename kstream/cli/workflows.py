"""``kstream serve`` (the workflows HTTP API) and ``kstream workflows start|status|list|cancel|retry``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click

from kstream import logs
from kstream.app import ack_producer, cursor_reader, producer, tail_consumer
from kstream.cli.common import Options, app_argument, pass_options, topology_of
from kstream.cli.serving import read_token, run_server
from kstream.codecs import from_json, pretty_json, to_json
from kstream.config import Settings
from kstream.errors import ConfigError, DeliveryFailed, NotFound
from kstream.kafka.port import latest_by_key
from kstream.loader import load_workflows
from kstream.naming import node_topic, workflow_state_topic
from kstream.workflows.client import command_event, event_headers, key_hash, start_event, workflow_id
from kstream.workflows.declare import ORCHESTRATOR, Workflow
from kstream.workflows.state import status_document


@click.command()
@app_argument
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=int)
@click.option("--token-file", type=click.Path(path_type=Path, dir_okay=False),
              help="File holding the bearer token (a mounted secret); or env KSTREAM_API_TOKEN. Without either: no auth.")
@click.option("--log-level", default="info", show_default=True, type=click.Choice(["debug", "info", "warning", "error"]))
@click.option("--console", "console_app", metavar="APP", help="Also serve the operator console of this topology at /console.")
@pass_options
def serve(options: Options, app: str, host: str, port: int, token_file: Path | None, log_level: str,  # noqa: PLR0917
          console_app: str | None) -> None:
    """Serve the HTTP API of the workflows of APP (needs the extra: pip install 'kstream[api]').

    POST /workflows/{type} starts one (Idempotency-Key makes it idempotent), GET
    /workflows/{id}[?wait=10s] answers its status, /healthz /readyz /metrics for probes.
    /readyz answers 503 until every state topic was read to its end.
    """
    try:
        import uvicorn  # noqa: F401  (the extra is there: else one line, here)

        from kstream.api.server import Kafka, create_app
    except ImportError as exc:
        raise ConfigError(f"kstream serve needs the api extra (pip install 'kstream[api]'): {exc}") from None
    logs.setup(log_level)
    workflows = load_workflows(app)
    settings = options.settings()
    token = read_token(token_file)
    kafka = Kafka(ack_producer(settings), cursor_reader(settings), lambda: tail_consumer(settings, "api"), settings.namespace)
    api_app = create_app(workflows, kafka, token=token)
    if console_app is not None:
        from kstream.console.app import create_console, mount

        mount(api_app, create_console(topology_of(console_app), settings, token=token, workflows=api_app))
    run_server(api_app, host, port, f"serving {', '.join(wf.name for wf in workflows)} on http://{host}:{port}")


@click.group()
def workflows() -> None:
    """Start and inspect workflows straight on Kafka (no API needed)."""


def _one(app: str, name: str | None) -> Workflow:
    found = load_workflows(app)
    if name is None:
        if len(found) != 1:
            raise click.UsageError(f"APP holds {len(found)} workflows: name one with --type")
        return found[0]
    for wf in found:
        if wf.name == name:
            return wf
    raise click.UsageError(f"APP has no workflow {name!r} (has: {', '.join(wf.name for wf in found)})")


def _send(settings: Settings, wf: Workflow, wid: str, value: bytes) -> None:
    prod = producer(settings)
    prod.produce(node_topic(settings.namespace, wf.name, ORCHESTRATOR), value, wid.encode(), event_headers(wid))
    left = prod.flush(30.0)
    errors = prod.take_errors()
    if left or errors:
        raise DeliveryFailed(errors[0] if errors else "the event was not acknowledged within 30 s", topic=wf.name)


def _states(settings: Settings, wf: Workflow) -> dict[str, dict[str, Any]]:
    records = cursor_reader(settings).read_compacted(workflow_state_topic(settings.namespace, wf.name), 60.0)
    return {k.decode(): from_json(v) for k, rec in latest_by_key(records).items() if (v := rec.value()) is not None}


type_option = click.option("--type", "wf_type", metavar="NAME", help="The workflow type (when APP holds several).")


@workflows.command("start")
@app_argument
@type_option
@click.option("--input", "data", default="null", show_default=True, help="The input as JSON.")
@click.option("--key", help="Idempotency key: the same key starts one workflow, however often it is given.")
@click.option("--id", "wid", help="The workflow id (default: from the key, else random).")
@pass_options
def start_cmd(options: Options, app: str, wf_type: str | None, data: str, key: str | None,  # noqa: PLR0917
              wid: str | None) -> None:
    """Start a workflow of APP; prints its id."""
    wf = _one(app, wf_type)
    try:
        value = from_json(data)
    except ValueError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint="--input") from None
    wid = wid or workflow_id(wf.name, key)
    _send(options.settings(), wf, wid, start_event(wid, value, key_hash=key_hash(key, value), at=int(time.time() * 1000)))
    click.echo(wid)


@workflows.command("status")
@app_argument
@click.argument("wid", metavar="ID")
@type_option
@pass_options
def status_cmd(options: Options, app: str, wid: str, wf_type: str | None) -> None:
    """Print the status document of workflow ID (JSON)."""
    state = _states(options.settings(), _one(app, wf_type)).get(wid)
    if state is None:
        raise NotFound(f"no workflow {wid} (not started, or not decided yet)")
    click.echo(pretty_json(to_json(status_document(state)).encode()))


@workflows.command("list")
@app_argument
@type_option
@click.option("--status", help="Only workflows in this status (running, blocked, compensated, ...).")
@pass_options
def list_cmd(options: Options, app: str, wf_type: str | None, status: str | None) -> None:
    """List workflows of APP: id, status, start time, steps not completed."""
    states = sorted(_states(options.settings(), _one(app, wf_type)).values(), key=lambda s: s["started"])
    for s in states:
        if status is None or s["status"] == status:
            doc = status_document(s)
            open_steps = [f"{n}:{d['status']}" for n, d in doc["steps"].items() if d["status"] != "completed"]
            click.echo(f"{s['id']}  {s['status']:<20} {doc['startedAt']}  {' '.join(open_steps)}".rstrip())


def _command(name: str, help_text: str) -> None:
    @workflows.command(name, help=help_text)
    @app_argument
    @click.argument("wid", metavar="ID")
    @type_option
    @pass_options
    def command(options: Options, app: str, wid: str, wf_type: str | None) -> None:
        settings = options.settings()
        wf = _one(app, wf_type)
        if wid not in _states(settings, wf):
            raise NotFound(f"no workflow {wid}")
        _send(settings, wf, wid, command_event(name))
        click.echo(f"{name} sent to {wid}")


_command("cancel", "Cancel workflow ID: nothing new runs, completed steps are compensated.")
_command("retry", "Re-run the failed steps of a blocked workflow (or its failed compensation).")
