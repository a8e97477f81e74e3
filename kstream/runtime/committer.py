"""A worker's commits: when they are due, and how finished offsets become committed.

At-least-once: every ``commit_interval`` the committer takes the offsets the strategy finished,
flushes the producer (every output and Trash entry of those messages acknowledged), and only
then commits them. A delivery failure raises :class:`DeliveryFailed` without committing: the
messages are processed again after restart.

Exactly-once: the open transaction commits with the offsets of every owned partition (its
outputs may come from any of them) every ``transaction_interval``. Downstream
``read_committed`` readers see outputs only once their transaction commits, so each
exactly-once hop would add up to the interval to a record's latency. So a transaction with
work in it also commits as soon as the worker finds no input waiting, once
``runtime.transaction_early`` (20 ms) passed since the last: on a stream that is not saturated
each hop adds about that plus the commit; a backlog always has input waiting, so its
transactions run the full interval (0 turns early commits off). A transaction that fails to
commit ends the worker (nothing more is committed); when the failure is retryable (aborted, or
:class:`TransactionInDoubt`), :func:`kstream.app.run_workers` replaces the worker in place.

Status: every commit publishes how many messages the worker has in flight
(:mod:`kstream.runtime.status`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from kstream.config import RuntimeSettings
from kstream.errors import BrokerError, DeliveryFailed, TransactionInDoubt
from kstream.kafka.port import Consumer, Producer, TopicPartition, WorkerTransactions
from kstream.metrics import NodeStats
from kstream.runtime.status import StatusReporter
from kstream.runtime.strategy import Partition, Strategy

log = logging.getLogger("kstream.worker")

FLUSH_TIMEOUT = 30.0


class Committer:
    """Commits for one worker; called from whichever thread owns the consumer at the time (the
    worker's, or its watchdog's while a batch runs long), never from two at once.

    ``owned`` is the worker's set of owned partitions (updated in place by the worker);
    ``hold`` polls the consumer with partitions paused (used while a flush waits for the
    cluster); ``stop_deadline`` is when a stop must be done (None while running).
    """

    def __init__(self, name: str, consumer: Consumer, producer: Producer, strategy: Strategy, stats: NodeStats, *,
                 settings: RuntimeSettings, topic: str, owned: set[Partition], hold: Callable[[], None],
                 stop_deadline: Callable[[], float | None], transactions: WorkerTransactions | None,
                 status: StatusReporter | None) -> None:
        self._name = name
        self._consumer = consumer
        self._producer = producer
        self._strategy = strategy
        self._stats = stats
        self._settings = settings
        self._topic = topic
        self._owned = owned
        self._hold = hold
        self._stop_deadline = stop_deadline
        self._txn = transactions
        self.status = status
        self.interval = settings.transaction_interval if transactions is not None else settings.commit_interval
        self._committed: dict[Partition, int] = {}
        self._last = time.monotonic()
        self._early = (settings.transaction_early or None) if transactions is not None else None
        self._processed_at_last = 0
        self.txn_done = False
        """The transaction is aborted or in doubt: nothing more to abort."""

    # -- when -----------------------------------------------------------------------------

    def due(self, now: float) -> bool:
        return now - self._last >= self.interval

    def early(self, now: float) -> bool:
        """Exactly-once (``runtime.transaction_early`` not 0): a transaction with work in it
        may commit now, if no input is waiting (the caller knows)."""
        return (self._early is not None and now - self._last >= self._early
                and self._strategy.processed != self._processed_at_last)

    # -- how ------------------------------------------------------------------------------

    def commit(self, state: str, *, asynchronous: bool, only: set[Partition] | None = None) -> None:
        """Flush outputs, then commit finished offsets of owned partitions (all or ``only``).

        Exactly-once: commit the open transaction with the offsets of every owned partition,
        then begin the next.
        """
        self._last = time.monotonic()
        self._processed_at_last = self._strategy.processed
        if self.status is not None:
            self.status.publish(state, self._strategy.in_flight, self._strategy.processed)
        if self._txn is not None:
            self._commit_transaction(self._txn)
            return
        for tp in self._consumer.take_commit_failures():
            self._stats.commit_failures += 1
            self._committed.pop((tp.topic, tp.partition), None)  # not done: committed again below
        offsets = self._offsets(self._owned if only is None else only & self._owned)
        if not offsets:
            return
        try:
            self._flush()
            self._consumer.commit(offsets, asynchronous=asynchronous)
        except BrokerError:
            self._stats.commit_failures += 1
            raise
        self._committed.update(((t, p), o) for t, p, o in offsets)

    def forget(self, partitions: set[Partition]) -> None:
        for tp in partitions:
            self._committed.pop(tp, None)

    def _offsets(self, wanted: set[Partition]) -> list[TopicPartition]:
        return [TopicPartition(t, p, o) for (t, p), o in self._strategy.committable().items()
                if (t, p) in wanted and self._committed.get((t, p)) != o]

    def _flush(self) -> None:
        """Wait until every output is acknowledged; raise :class:`DeliveryFailed` if one failed.

        While the cluster is away (a broker restart, a network cut) the worker takes no new
        input but keeps polling, so it stays in its group, and keeps its uncommitted window;
        librdkafka reconnects and delivers. Only past ``runtime.broker_outage_timeout`` does it
        give up (the records' own ``message.timeout.ms``, 5 min by default, fails them too).
        """
        started = time.monotonic()
        deadline = started + self._settings.broker_outage_timeout
        stop_deadline = self._stop_deadline()
        if stop_deadline is not None:  # stopping: what is not acknowledged by then is redelivered
            deadline = min(deadline, stop_deadline)
        warned = False
        while (left := self._producer.flush(1.0)) > 0:
            now = time.monotonic()
            if now > deadline:
                why = ("the shutdown budget (runtime.shutdown_timeout)" if stop_deadline is not None
                       else f"{self._settings.broker_outage_timeout:g} s (runtime.broker_outage_timeout)")
                raise DeliveryFailed(f"{self._name}: {left} outputs not acknowledged within {why}; "
                                     "offsets not committed", topic=self._topic)
            if not warned and now - started > 5.0:
                log.warning("%s: %d outputs wait for the cluster; no new input until they are acknowledged "
                            "(waiting up to %g s)", self._name, left, self._settings.broker_outage_timeout)
                warned = True
            self._hold()
        if warned:
            log.warning("%s: outputs acknowledged after %.0f s; going on", self._name, time.monotonic() - started)
        errors = self.delivery_errors()
        if errors:
            raise DeliveryFailed(f"{self._name}: {errors[0]}; offsets not committed", topic=self._topic)

    def _commit_transaction(self, txn: WorkerTransactions) -> None:
        self._strategy.quiesce(self._settings.shutdown_timeout)
        try:
            offsets = self._offsets(self._owned)
            # A status record in the open transaction commits even without offsets: left open,
            # it would hold read_committed readers of the status topic until the broker aborts it.
            status = self.status is not None and self.status.written
            if offsets or status:
                try:
                    timeout = FLUSH_TIMEOUT
                    stop_deadline = self._stop_deadline()
                    if stop_deadline is not None:
                        timeout = max(1.0, min(timeout, stop_deadline - time.monotonic()))
                    txn.commit(offsets, self._consumer.group_metadata(), timeout)
                    self._stats.transactions_committed += 1
                except TransactionInDoubt:
                    self.txn_done = True  # the successor's init aborts it
                    self._stats.transactions_aborted += 1
                    txn.discard()
                    raise
                except BrokerError as exc:
                    self.txn_done = exc.retryable  # aborted already
                    self._stats.transactions_aborted += exc.retryable
                    raise
                self._committed.update(((t, p), o) for t, p, o in offsets)
                if self.status is not None:
                    self.status.written = False
        finally:
            self._strategy.unquiesce()

    def delivery_errors(self) -> list[str]:
        """The producer's delivery failures, less those of status records (logged only)."""
        errors = self._producer.take_errors()
        status = self.status
        if status is None or not errors:
            return errors
        for e in errors:
            if status.owns(e):
                log.warning("%s: status record not delivered: %s", self._name, e)
        return [e for e in errors if not status.owns(e)]

    def flush_status(self) -> None:
        """At-least-once: the tombstone is queued only; wait briefly for it (errors logged)."""
        if self.status is None or self._txn is not None or not self.status.written:
            return
        left = self._producer.flush(5.0)
        errors = self.delivery_errors()
        if left or errors:
            log.warning("%s: %s", self._name, errors[0] if errors else f"{left} records not acknowledged at stop")

    def abort(self) -> None:
        if self._txn is None or self.txn_done:
            return
        self._stats.transactions_aborted += 1
        try:
            self._txn.abort(5.0)
        except Exception as exc:  # noqa: BLE001  (already failing; the broker times the transaction out)
            log.warning("%s: aborting the open transaction failed: %s", self._name, exc)
