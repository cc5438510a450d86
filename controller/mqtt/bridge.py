"""The MQTT bridge: one aiomqtt connection per controller replica, kept alive forever.

Inside each connection these tasks run:

* **receive**: every message from the subscriptions goes straight from paho's callback into
  the inbox of its locker's ingest lane. The lockers' streams arrive at ``stream_qos`` (0 by
  default: nothing to acknowledge to the broker); durability is end to end: lockers keep what
  we have not acknowledged in our own signed acks, see
  ``docs/adr/0003-end-to-end-acknowledgements.md``. A task only watches aiomqtt's message
  iterator, which ends when the connection is lost;
* **ingest**, one per lane (``ingest_lanes``; lockers are split among lanes by id, so a
  locker's messages keep their order): takes up to ``ingest_batch_size`` messages (waiting at
  most ``ingest_batch_wait_ms`` for more after the first), stores and applies them in one
  transaction, and only after the commit publishes the acks. Lanes lock disjoint locker rows
  and store side by side, one waiting for the database while another runs;
* **dispatch**: whenever woken (a transaction left commands pending, or made a locker's
  commands due again) or once a second, leases the due commands, publishes them, and records
  that they were sent.

aiomqtt does not reconnect by itself: :meth:`MqttBridge.run` loops with jittered exponential
backoff (0.5 s doubling to 4 s, ``reconnect.MAX_BACKOFF_S``). The controller's presence is
published retained on connect, with an offline last will, per replica instance. Replicas share
the lockers' streams through a shared subscription when ``share_group`` is set.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import aiomqtt

from controller.clock import to_ms
from controller.db.outage import DATABASE_DOWN, OutageNotice, is_outage
from controller.mqtt.inbox import Inbox, Lanes
from controller.mqtt.nodelay import client_tcp_nodelay
from controller.mqtt.reading import paho_client_of, read_in_bulk
from controller.mqtt.reconnect import stay_connected
from controller.services.commands import CommandDispatcher, Outgoing
from controller.services.context import Context
from controller.services.ingest import AckBook, BatchReport, Inbound, Ingest
from protocol.codec import encode
from protocol.messages import ControllerPresence, PresenceState
from protocol.urls import BrokerAddress

log = logging.getLogger("lockerfleet.bridge")

INBOX_LIMIT = 200_000
"""Messages waiting for the ingest (all lanes together) beyond which new ones are dropped, to
be sent again by their lockers: a bound on memory (~100 MB of typical messages), far above
what a reconnect storm of 5,000 lockers brings (~40,000)."""

CLAIM_LIMIT = 200
"""Commands leased, signed and published in one round of the dispatcher."""

OUTGOING_CALLS = 1000
"""Publishes awaiting their PUBACK at once (aiomqtt's ``max_concurrent_outgoing_calls`` and
paho's in-flight window): acks and commands in a reconnect storm are thousands at a time."""


@dataclass
class BridgeStats:
    """Counters for /metrics and the readiness check."""

    connected: bool = False
    connects: int = 0
    received: int = 0
    stored: int = 0
    duplicates: int = 0
    rejected: int = 0
    acks_published: int = 0
    commands_published: int = 0
    batches: int = 0
    deferred: int = 0
    """Messages put back for the next batch: another replica held their locker's row."""
    last_batch_seconds: float = 0.0
    batch_seconds: float = 0.0
    """Time spent storing batches, in all."""
    ack_seconds: float = 0.0
    """Time from publishing a batch's acks to their last PUBACK, in all (overlaps storing)."""
    overflowed: int = 0
    """Messages dropped because the inbox was full (their lockers send them again)."""
    publish_failures: int = 0
    """Acks and commands the broker did not confirm (sent again: see ``_publish``)."""
    queue_depth: Callable[[], int] = field(default=lambda: 0)
    rejections_by_code: dict[str, int] = field(default_factory=dict)


class MqttBridge:
    def __init__(
        self,
        ctx: Context,
        address: BrokerAddress,
        *,
        on_batch: Callable[[BatchReport], Awaitable[None]] | None = None,
    ) -> None:
        self.ctx = ctx
        self.address = address
        self.ingest = Ingest(ctx)
        self.dispatcher = CommandDispatcher(ctx, owner=ctx.settings.instance_id)
        self.stats = BridgeStats()
        self._wake = asyncio.Event()
        self._on_batch = on_batch
        self._client: aiomqtt.Client | None = None
        self._publishing: set[asyncio.Task[None]] = set()

    def wake(self) -> None:
        """Ask the dispatcher to look for due commands now (call from the event loop)."""
        self._wake.set()

    def lane_count(self) -> int:
        """Ingest lanes: ``ingest_lanes``, but one on SQLite (a single writer at a time)."""
        return 1 if self.ctx.db.dialect == "sqlite" else self.ctx.settings.ingest_lanes

    def ready(self) -> bool:
        """Connected and subscribed: commands published now go out (Publisher)."""
        return self.stats.connected and self._client is not None

    def publish_commands(self, messages: list[tuple[str, bytes]]) -> None:
        """Publish signed commands a service stored as sent, in the background (Publisher).
        A publish that fails is only logged: the command's retry sends it again."""
        client = self._client
        if client is None or not messages:
            return
        task = asyncio.create_task(self._publish_now(client, messages))
        self._publishing.add(task)
        task.add_done_callback(self._publishing.discard)

    async def _publish_now(self, client: aiomqtt.Client, messages: list[tuple[str, bytes]]) -> None:
        sent = await self._publish(client, messages, "commands (retried)")
        self.stats.commands_published += sum(sent)

    async def _publish(
        self, client: aiomqtt.Client, messages: list[tuple[str, bytes]], what: str
    ) -> list[bool]:
        """Publish at QoS 1; which ones the broker confirmed. A publish that fails or is not
        confirmed in time is counted and logged, not raised: what it carried is sent again
        (commands by their retry, events by their lockers); a lost connection is noticed by
        the watch task."""
        results = await asyncio.gather(
            *(client.publish(t, p, qos=1) for t, p in messages), return_exceptions=True
        )
        failed = [r for r in results if isinstance(r, BaseException)]
        for error in failed:
            if not isinstance(error, aiomqtt.MqttError | TimeoutError):
                raise error
        if failed:
            self.stats.publish_failures += len(failed)
            log.warning(
                "%d of %d %s not confirmed by the broker (%s)",
                len(failed), len(messages), what, failed[0],
            )  # fmt: skip
        return [not isinstance(r, BaseException) for r in results]

    @property
    def presence_topic(self) -> str:
        return self.ctx.topics.controller_presence(self.ctx.settings.instance_id)

    def _presence(self, state: PresenceState) -> bytes:
        message = ControllerPresence(
            self.ctx.settings.instance_id, state, to_ms(self.ctx.clock.now())
        )
        return encode(message)

    async def run(self) -> None:
        """Stay connected until cancelled, reconnecting with jittered backoff."""
        await stay_connected(self._session, f"broker {self.address.url()}", self._lost)

    def _lost(self) -> None:
        self.stats.connected = False
        self._client = None

    async def _session(self) -> None:
        settings = self.ctx.settings
        will = aiomqtt.Will(self.presence_topic, self._presence(PresenceState.OFFLINE), 1, True)
        async with aiomqtt.Client(
            self.address.host,
            self.address.port,
            username=self.address.username,
            password=self.address.password,
            identifier=f"lockerfleet-{settings.instance_id}",
            will=will,
            # A clean session: a replica that is gone must not keep a queue in the broker
            # that a shared subscription keeps feeding. Nothing is lost meanwhile: lockers
            # resend whatever no replica has acknowledged.
            clean_session=True,
            keepalive=30,
            max_concurrent_outgoing_calls=OUTGOING_CALLS,
            # paho keeps 20 QoS 1 publishes in flight by default: at a busy broker's PUBACK
            # round trip that throttled a storm's acks and code syncs to a few hundred a
            # second, and lockers resent everything after their 30 s.
            max_inflight_messages=OUTGOING_CALLS,
        ) as client:
            # Hundreds of acks and commands in flight are the normal case under load, not a
            # concern to log on every publish (aiomqtt warns beyond 10 by default).
            client.pending_calls_threshold = OUTGOING_CALLS
            self._client = client
            count = self.lane_count()
            lanes = Lanes(
                [Inbox(self.ctx.clock.now, self.stats, INBOX_LIMIT // count) for _ in range(count)],
                self.ctx.topics.root,
            )
            lanes.attach(client)
            inner = paho_client_of(client)
            read_in_bulk(inner)
            client_tcp_nodelay(inner)
            await client.publish(
                self.presence_topic, self._presence(PresenceState.ONLINE), qos=1, retain=True
            )
            subscriptions = self.ctx.topics.controller_subscriptions(
                settings.share_group, stream_qos=settings.stream_qos
            )
            for topic, qos in subscriptions:
                await client.subscribe(topic, qos=qos)
            self.stats.connected = True
            self.stats.connects += 1
            log.info("connected to %s as %s", self.address.url(), settings.instance_id)
            self.stats.queue_depth = lanes.__len__
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._watch(client), name="bridge-watch")
                for n, inbox in enumerate(lanes.inboxes):
                    tasks.create_task(self._ingest(client, inbox), name=f"bridge-ingest-{n}")
                tasks.create_task(self._dispatch(client), name="bridge-dispatch")

    async def _watch(self, client: aiomqtt.Client) -> None:
        """Return (raising MqttError) when the connection is lost. The messages themselves go
        to the inbox, so aiomqtt's iterator never yields one."""
        async for message in client.messages:
            log.warning("message on %s bypassed the inbox; dropped", message.topic)

    async def _ingest(self, client: aiomqtt.Client, inbox: Inbox) -> None:
        """Store batch after batch; acknowledge what they stored.

        Acks leave only after the commit. When batches come back to back (the queue is not
        empty after one), what they stored is merged and acknowledged together, at the latest
        ``ack_coalesce_ms`` after the first: a locker then gets one ack for several batches
        instead of one each. When the queue is empty, everything pending is acknowledged at
        once. The next batches are stored while the acks wait for their PUBACKs, one set of
        acks in flight at a time: while a set is still in flight, what later batches stored is
        merged into the next set instead of the lane waiting.
        """
        acking: asyncio.Task[None] | None = None
        pending = AckBook()
        pending_since = 0.0
        coalesce_s = self.ctx.settings.ack_coalesce_ms / 1000
        deferred: list[Inbound] = []
        wait_for: set[str] = set()
        try:
            while True:
                batch = deferred + await self._next_batch(inbox, len(deferred))
                started = time.monotonic()
                report = await self._handle(batch, wait_for)
                deferred, wait_for = report.deferred, report.deferred_lockers
                self.stats.deferred += len(deferred)
                self.stats.last_batch_seconds = time.monotonic() - started
                self.stats.batch_seconds += self.stats.last_batch_seconds
                if not pending:
                    pending_since = time.monotonic()
                pending.merge(report.to_ack)
                at_commit = report.at_commit
                self.publish_commands([(o.topic, o.payload) for o in at_commit.outgoing])
                if at_commit.dispatcher_needed():
                    self.wake()
                if self._on_batch is not None:
                    await self._on_batch(report)
                more = bool(len(inbox) or deferred)
                if more and time.monotonic() - pending_since < coalesce_s:
                    continue
                if more and acking is not None and not acking.done():
                    # The previous acks still wait for their PUBACKs (a busy broker): keep
                    # storing, and merge into the next set rather than stall the lane.
                    continue
                if acking is not None:
                    await acking
                acking = asyncio.create_task(self._publish_acks(client, pending))
                pending = AckBook()
        finally:
            if acking is not None:
                acking.cancel()

    async def _next_batch(self, inbox: Inbox, have: int = 0) -> list[Inbound]:
        """Up to ``ingest_batch_size`` messages (less ``have`` already in hand): the first,
        and what comes within the wait. With messages in hand, only what is waiting now."""
        settings = self.ctx.settings
        if have:
            return inbox.take_now(settings.ingest_batch_size - have)
        return await inbox.take(settings.ingest_batch_size, settings.ingest_batch_wait_ms / 1000)

    async def _publish_acks(self, client: aiomqtt.Client, book: AckBook) -> None:
        started = time.monotonic()
        acks = book.sign(self.ctx)
        sent = await self._publish(client, [(a.topic, a.payload) for a in acks], "acks")
        self.stats.acks_published += sum(sent)
        self.stats.ack_seconds += time.monotonic() - started

    async def _handle(self, batch: list[Inbound], wait_for: set[str] | None = None) -> BatchReport:
        """Store one batch.

        While the database is unreachable the batch is retried with backoff (nothing is
        acknowledged meanwhile, so lockers keep everything). Any other failure is a bug
        triggered by some message: the batch is then stored one message at a time so that
        only the culprit is left out (unacknowledged, logged each time it comes back).
        """
        delay = 0.5
        while True:
            try:
                report = await self.ingest.handle(batch, sign_acks=False, wait_for=wait_for)
                break
            except DATABASE_DOWN as exc:
                log.warning(
                    "database unavailable (%s); retrying a batch of %d in %.1f s",
                    type(exc).__name__,
                    len(batch),
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
            except Exception:
                if len(batch) == 1:
                    log.exception("message on %s could not be stored", batch[0].topic)
                    return BatchReport()
                report = BatchReport()
                for item in batch:
                    report.merge(await self._handle([item]))
                return report
        self.stats.batches += 1
        self.stats.stored += report.stored
        self.stats.duplicates += report.duplicates
        self.stats.rejected += len(report.rejected)
        for rejection in report.rejected:
            self.stats.rejections_by_code[rejection.code] = (
                self.stats.rejections_by_code.get(rejection.code, 0) + 1
            )
            log.warning(
                "rejected message on %s: %s (%s)", rejection.topic, rejection.reason, rejection.code
            )
        return report

    async def _dispatch(self, client: aiomqtt.Client) -> None:
        interval = self.ctx.settings.background_interval_s
        outage = OutageNotice(log, "the command dispatcher")
        full = False
        while True:
            if not full:  # a full claim means more are due: claim again at once
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(interval):
                        await self._wake.wait()
            self._wake.clear()
            try:
                due = await self.dispatcher.claim_due(CLAIM_LIMIT)
            except Exception as exc:
                full = False
                if is_outage(exc):
                    outage.began(exc)  # one warning for the whole outage, not one per round
                else:
                    log.exception("claiming due commands failed")
                continue
            outage.ended()
            full = len(due) == CLAIM_LIMIT
            if due:
                await self._publish_commands(client, due)

    async def _publish_commands(self, client: aiomqtt.Client, due: list[Outgoing]) -> None:
        sent = await self._publish(client, [(c.topic, c.payload) for c in due], "commands")
        self.stats.commands_published += sum(sent)
        try:
            # The others stay leased and go out again when their lease ends.
            confirmed = [c.command_id for c, ok in zip(due, sent, strict=True) if ok]
            await self.dispatcher.record_sent(confirmed)
        except Exception:
            log.exception("recording %d sent commands failed", len(due))

    async def publish_offline(self) -> None:
        """Say goodbye cleanly (the last will covers crashes)."""
        if self._client is not None:
            with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
                await self._client.publish(
                    self.presence_topic,
                    self._presence(PresenceState.OFFLINE),
                    qos=1,
                    retain=True,
                    timeout=2,
                )
