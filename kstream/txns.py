"""Hanging transactions: noticing them, and Kafka's own tool to list and abort them (KIP-664).

A transaction *hangs* when a partition holds the first records of a transaction whose end
marker will never come: the coordinator has forgotten it (for example it aborted it while the
partition had no leader, and dropped the marker). The partition's last stable offset (LSO) then
stays at that transaction's first offset for good; ``read_committed`` readers, which is every
kstream consumer, see nothing past it, while producers go on appending and consumer groups may
even commit. Nothing fails: the data simply never becomes visible.

:class:`HangingWatch` notices it from the outside: an LSO that stays at one offset below the
high watermark for longer than any live transaction can last (its timeout) plus a margin.
:class:`TransactionsTool` runs Kafka's own ``kafka-transactions.sh`` (its main class, from the
jars ``kstream dev broker`` fetched; confluent-kafka has no DescribeProducers / abort API) to
list them (``find-hanging``) and abort one (``abort``), which writes the missing ABORT marker.
"""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from kstream.errors import BrokerError, NotFound
from kstream.kafka.port import PartitionEnds

TRANSACTIONS_COMMAND = "org.apache.kafka.tools.TransactionsCommand"


def remedy(topic: str, partition: int, offset: int) -> str:
    """The command that ends a hanging transaction starting at ``offset``."""
    return f"kstream txns abort --topic {topic} --partition {partition} --start-offset {offset}"


@dataclass(frozen=True)
class Hanging:
    """A partition whose LSO has stayed at ``offset`` (below the high watermark) since ``since``."""

    topic: str
    partition: int
    offset: int
    since: float
    """When the LSO was first seen stuck there (the watch's clock, seconds)."""

    def line(self, now: float) -> str:
        return (f"hanging transaction on {self.topic}[{self.partition}]: the last stable offset has stayed at "
                f"{self.offset} for {now - self.since:.0f} s; read_committed readers see nothing past it; "
                f"abort it with: {remedy(self.topic, self.partition, self.offset)}")


class HangingWatch:
    """Pure bookkeeping over successive :class:`PartitionEnds` observations.

    A partition is hanging once its LSO has been below its high watermark at the *same* offset
    for ``after`` seconds. Live transactions move the LSO on within their timeout (or the
    coordinator aborts them), so ``after`` must exceed the longest transaction timeout of any
    producer of the topics. Not thread-safe: one thread observes.
    """

    def __init__(self, after: float) -> None:
        self.after = after
        self._stuck: dict[tuple[str, int], tuple[int, float]] = {}
        self.hanging: dict[tuple[str, int], Hanging] = {}

    def observe(self, ends: Iterable[PartitionEnds], now: float) -> tuple[list[Hanging], list[Hanging]]:
        """Record one observation of some partitions; return (newly hanging, no longer hanging)."""
        new: list[Hanging] = []
        gone: list[Hanging] = []
        for e in ends:
            tp = (e.topic, e.partition)
            if e.stable >= e.high or e.stable < 0:
                self._stuck.pop(tp, None)
                if (was := self.hanging.pop(tp, None)) is not None:
                    gone.append(was)
                continue
            offset, since = self._stuck.get(tp, (e.stable, now))
            if offset != e.stable:  # moved on: another transaction is open now
                offset, since = e.stable, now
                if (was := self.hanging.pop(tp, None)) is not None:
                    gone.append(was)
            self._stuck[tp] = (offset, since)
            if now - since >= self.after and tp not in self.hanging:
                self.hanging[tp] = found = Hanging(e.topic, e.partition, offset, since)
                new.append(found)
        return new, gone


@dataclass(frozen=True)
class OpenTransaction:
    """One row of ``find-hanging`` / ``describe-producers``."""

    topic: str
    partition: int
    producer_id: int
    producer_epoch: int
    start_offset: int
    last_timestamp: int


class TransactionsTool:
    """Kafka's ``kafka-transactions.sh`` (``TransactionsCommand``) run from the dev broker's jars.

    Every call starts a JVM (about a second) and blocks until it exits or ``timeout``.
    Client properties: ``security.protocol``, ``sasl.*`` and ``ssl.*`` librdkafka settings
    that mean the same to the Java admin client are passed on in a ``--command-config`` file.
    """

    def __init__(self, bootstrap: str, kafka: Mapping[str, str], *, libs: Path, timeout: float = 60.0) -> None:
        self._bootstrap = bootstrap
        self._kafka = dict(kafka)
        self._libs = libs
        self._timeout = timeout

    def find_hanging(self, broker_ids: Sequence[int], topics: Iterable[str] | None,
                     stable_offsets: Callable[[Sequence[str]], Iterable[PartitionEnds]]) -> list[OpenTransaction]:
        """Open transactions on the brokers' partitions that no coordinator knows (of ``topics`` only, if given).

        ``stable_offsets`` reads the partitions' ends once the tool is done (:func:`still_pinning`)."""
        wanted = None if topics is None else set(topics)
        found: list[OpenTransaction] = []
        for broker in broker_ids:
            # Candidates are open transactions whose last write is older than this many minutes;
            # 0: all of them. Those a coordinator still tracks are left out by the tool itself.
            out = self._run("find-hanging", "--broker-id", str(broker), "--max-transaction-timeout", "0")
            found += [t for t in _rows(out) if wanted is None or t.topic in wanted]
        return still_pinning(found, stable_offsets(sorted({t.topic for t in found}))) if found else []

    def describe_producers(self, topic: str, partition: int) -> list[OpenTransaction]:
        """Active producers of one partition, with their open transaction's start offset (-1: none)."""
        out = self._run("describe-producers", "--topic", topic, "--partition", str(partition))
        rows: list[OpenTransaction] = []
        for cells in _table(out):
            # ProducerId ProducerEpoch LatestCoordinatorEpoch LastSequence LastTimestamp CurrentTransactionStartOffset
            rows.append(OpenTransaction(topic, partition, int(cells[0]), int(cells[1]), _offset(cells[5]), int(cells[4])))
        return rows

    def abort(self, topic: str, partition: int, start_offset: int) -> None:
        """Write the ABORT marker of the transaction that starts at ``start_offset``."""
        self._run("abort", "--topic", topic, "--partition", str(partition), "--start-offset", str(start_offset))

    def _run(self, *args: str) -> str:
        from kstream.dev.broker import java_tool

        with tempfile.NamedTemporaryFile("w", suffix=".properties", prefix="kstream-txns-") as config:
            config.write(_java_admin_properties(self._kafka))
            config.flush()
            argv = java_tool(self._libs, TRANSACTIONS_COMMAND, "--bootstrap-server", self._bootstrap,
                             "--command-config", config.name, *args)
            try:
                done = subprocess.run(argv, capture_output=True, text=True, timeout=self._timeout, check=False)
            except subprocess.TimeoutExpired:
                raise BrokerError(f"kafka-transactions {args[0]} did not finish within {self._timeout:g} s") from None
        if done.returncode != 0:
            lines = [ln.strip() for ln in (done.stderr + done.stdout).splitlines() if ln.strip()]
            why = next((ln for ln in lines if not ln.startswith(("[", "SLF4J", "WARN", "INFO"))), lines[-1] if lines else "")
            if "Could not find any open transactions" in why or "No open transaction" in why:
                raise NotFound(why)
            raise BrokerError(f"kafka-transactions {args[0]} failed: {why}")
        return done.stdout


def still_pinning(found: Iterable[OpenTransaction], ends: Iterable[PartitionEnds]) -> list[OpenTransaction]:
    """The transactions of ``found`` that may still hold their partition's LSO, given ``ends`` read after.

    ``find-hanging --max-transaction-timeout 0`` races a live producer: it reads a partition's
    open transaction, then asks the coordinator, which has meanwhile committed it (or started
    the next one without that partition) and so reports it as hanging. A transaction that
    really hangs pins its partition's last stable offset at or below its start offset; one whose
    partition's LSO has since moved past its start has ended, and is dropped here.
    """
    stable = {(e.topic, e.partition): e.stable for e in ends}
    return [t for t in found if stable.get((t.topic, t.partition), -1) <= t.start_offset]


def _table(out: str) -> list[list[str]]:
    """The data rows of the tool's tab-separated table (the first line is the header)."""
    lines = [ln for ln in out.splitlines() if ln.strip()]
    return [ln.split() for ln in lines[1:]]


def _offset(cell: str) -> int:
    return -1 if cell == "None" else int(cell)  # None: no open transaction


def _rows(out: str) -> list[OpenTransaction]:
    # Topic Partition ProducerId ProducerEpoch CoordinatorEpoch StartOffset LastTimestamp Duration(min)
    return [OpenTransaction(c[0], int(c[1]), int(c[2]), int(c[3]), int(c[5]), int(c[6])) for c in _table(out)]


_JAVA_SAME = ("security.protocol", "sasl.mechanism", "ssl.endpoint.identification.algorithm")


def _java_admin_properties(kafka: Mapping[str, str]) -> str:
    """The librdkafka settings that the Java admin client understands, in its own terms."""
    props = {k: v for k, v in kafka.items() if k in _JAVA_SAME}
    if "sasl.mechanisms" in kafka:
        props["sasl.mechanism"] = kafka["sasl.mechanisms"]
    user, password = kafka.get("sasl.username"), kafka.get("sasl.password")
    if user is not None and password is not None:
        mechanism = props.get("sasl.mechanism", "PLAIN").upper()
        module = ("org.apache.kafka.common.security.plain.PlainLoginModule" if mechanism == "PLAIN"
                  else "org.apache.kafka.common.security.scram.ScramLoginModule")
        props["sasl.jaas.config"] = f'{module} required username="{user}" password="{password}";'
    if "ssl.ca.location" in kafka:
        props["ssl.truststore.type"] = "PEM"
        props["ssl.truststore.location"] = kafka["ssl.ca.location"]
    return "".join(f"{k}={v}\n" for k, v in props.items())
