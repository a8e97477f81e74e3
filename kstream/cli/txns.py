"""``kstream txns``: find and abort hanging transactions (see :mod:`kstream.txns`)."""

from __future__ import annotations

import click

from kstream.app import admin
from kstream.cli.common import BROKER_DIR, Options, pass_options, topology_of
from kstream.errors import NotFound
from kstream.provision import wanted
from kstream.txns import TransactionsTool


def _tool(options: Options) -> TransactionsTool:
    from kstream.dev.broker import LocalBroker

    settings = options.settings()
    libs = LocalBroker(BROKER_DIR).resolve()  # the jars only: no broker is started
    return TransactionsTool(settings.bootstrap_servers, settings.client_properties(), libs=libs)


@click.group()
def txns() -> None:
    """Hanging transactions: list them and abort them (Kafka's kafka-transactions tool, KIP-664).

    A transaction hangs when its first records sit in a partition and no coordinator will ever
    end it: the partition's last stable offset stays there, and read_committed readers (every
    kstream node) see nothing past it. `kstream run` and `kstream lag` report such partitions
    with the command to run. Runs Kafka's own TransactionsCommand from the jars `kstream dev
    broker` fetches (needs java 17+; mvn on first use).
    """


@txns.command()
@click.argument("app", metavar="[APP]", required=False)
@pass_options
def hanging(options: Options, app: str | None) -> None:
    """List hanging transactions on APP's topics (every topic of the cluster without APP).

    Prints TOPIC PARTITION START-OFFSET PRODUCER-ID EPOCH and the abort command of each;
    "no hanging transactions" when there are none. Exits 0 either way.
    """
    settings = options.settings()
    topics = None if app is None else [w.name for w in wanted(topology_of(app), settings)]
    client = admin(settings)
    found = _tool(options).find_hanging(client.broker_ids(), topics, client.stable_offsets)
    if not found:
        click.echo("no hanging transactions")
        return
    click.echo("TOPIC\tPARTITION\tSTART-OFFSET\tPRODUCER-ID\tEPOCH\tABORT WITH")
    for t in sorted(found, key=lambda t: (t.topic, t.partition, t.start_offset)):
        click.echo(f"{t.topic}\t{t.partition}\t{t.start_offset}\t{t.producer_id}\t{t.producer_epoch}\t"
                   f"kstream txns abort --topic {t.topic} --partition {t.partition} --start-offset {t.start_offset}")


@txns.command()
@click.option("--topic", required=True, help="The partition's topic.")
@click.option("--partition", required=True, type=click.IntRange(min=0), help="The partition.")
@click.option("--start-offset", required=True, type=click.IntRange(min=0),
              help="First offset of the transaction (the partition's stuck last stable offset).")
@click.option("--dry-run", is_flag=True, help="Show the transaction that would be aborted; change nothing.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@pass_options
def abort(options: Options, topic: str, partition: int, start_offset: int, dry_run: bool, yes: bool) -> None:  # noqa: PLR0917
    """Abort the open transaction that starts at START-OFFSET of TOPIC[PARTITION].

    Writes the ABORT marker the coordinator never wrote: the transaction's own records are
    dropped for read_committed readers, and everything after them becomes readable. Only for a
    transaction that hangs (`kstream txns hanging`): aborting a live one fails its producer's
    commit. Exits 1 when no open transaction starts at that offset.
    """
    tool = _tool(options)
    open_ = [p for p in tool.describe_producers(topic, partition) if p.start_offset == start_offset]
    if not open_:
        raise NotFound(f"no open transaction starts at offset {start_offset} of {topic}[{partition}]")
    t = open_[0]
    what = f"transaction of producer {t.producer_id} (epoch {t.producer_epoch}) at {topic}[{partition}] offset {start_offset}"
    if dry_run:
        click.echo(f"would abort the {what}")
        return
    if not yes:
        click.confirm(f"abort the {what}?", abort=True, err=True)
    tool.abort(topic, partition, start_offset)
    click.echo(f"aborted the {what}")
