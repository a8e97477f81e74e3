"""``kstream start``: produce an entry message to a node's input (starts a run)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import click

from kstream.app import admin, receipt_producer
from kstream.avro_topics import json_to_avro
from kstream.cli.common import Options, app_argument, pass_options, topology_of
from kstream.errors import BrokerError, ConfigError, DecodeError
from kstream.headers import ID, WORKFLOW

FLUSH_TIMEOUT = 30.0


@click.command()
@app_argument
@click.argument("node", metavar="NODE")
@click.option("--payload", metavar="JSON", help="The message's payload, as JSON (default: {}).")
@click.option("--file", "file", type=click.Path(path_type=Path), help="Read the JSON payload from this file.")
@click.option("--key", "--scope", "key", metavar="K",
              help="The message key. For a batch node it is the run's scope (default \"\").")
@pass_options
def start(options: Options, *, app: str, node: str, payload: str | None, file: Path | None, key: str | None) -> None:
    """Produce an entry message to NODE's input topic: a new workflow (for a batch node, a run).

    The payload must be JSON and is checked by the node's decoder (a pydantic model validates
    it) before anything is written; for an Avro node it is then encoded with the node's
    schema; a batch node gets it as the run's ctx.params. Prints the
    topic, partition and offset written and the new workflow id.
    """
    if payload is not None and file is not None:
        raise click.UsageError("start: give --payload or --file, not both")
    if file is not None:
        try:
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise ConfigError(f"cannot read {file}: {reason}") from None
        where = str(file)
    else:
        text = "{}" if payload is None else payload
        where = "--payload"
    try:
        json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"{where} is not valid JSON: {exc}") from None
    value = text.strip().encode()

    topology = topology_of(app)
    target = topology.get(node)
    try:
        target.decode(value)
    except DecodeError as exc:
        raise ConfigError(f"payload refused by node {node!r} ({exc.reason}): {exc}") from None
    if target.batch is not None and key is None:
        key = ""
    settings = options.settings()
    topic = target.input_topic(settings.namespace)
    if target.avro is not None:
        value = json_to_avro(topology, target, settings, value)
    if topic not in admin(settings).topics([topic]):
        raise ConfigError(f"topic {topic} does not exist: run `kstream topics apply {app}` first")

    workflow = uuid.uuid4().hex
    prod = receipt_producer(settings)
    prod.produce(topic, value, None if key is None else key.encode(),
                 [(ID, uuid.uuid4().hex.encode()), (WORKFLOW, workflow.encode())])
    left = prod.flush(FLUSH_TIMEOUT)
    errors = prod.take_errors()
    if errors:
        raise BrokerError(errors[0])
    if left or not prod.written:
        raise BrokerError(f"the entry message to {topic} was not acknowledged within {FLUSH_TIMEOUT:g} s")
    at = prod.written[0]
    click.echo(f"started {topology.name}/{node}: {at.topic} [{at.partition}] @ {at.offset}, workflow {workflow}")
