"""A partition-parallel worker as a member of a Kafka consumer group: the group's
coordinator, not the workers' leases, decides which worker owns which partition.

The member subscribes to the topic but reads nothing itself (its partitions are paused
as soon as they are assigned): each owned partition is read by its own engine unit
(``streams.workers``), from the offsets in that unit's checkpoint, and the checkpoint
commits with the output in the sink. Kafka's group offsets only show the lag (the member
commits each committed checkpoint's offsets to the group). So a partition that moves
between members moves with its checkpoint: the new owner resumes exactly where the old
owner's last commit left it, nothing skipped, nothing written twice.

Rebalances reach the worker through librdkafka's rebalance callbacks, which run inside
``poll`` on the worker's thread:

- **revoked**: the worker stops the partitions' units (each finishes its batch in flight
  and commits a last checkpoint) *before* the callback returns, and only then does this
  member give the partitions up and rejoin the group; so the next owner never starts
  while the old one may still commit;
- **assigned**: the worker starts a unit per partition, which restores that partition's
  state and offsets from its checkpoint;
- **lost** (this member was dropped from the group, e.g. it went silent longer than the
  session timeout): the partitions may already be owned elsewhere; the units are stopped
  all the same, and the sink's own writer lock per checkpoint (PostgreSQL advisory lock,
  Kafka transactional id) keeps a late commit from interleaving with the new owner's.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable

from confluent_kafka import Consumer, KafkaException, TopicPartition

from dataflare_platform.connectors.kafka.settings import KafkaGroupMembership, KafkaSettings

log = logging.getLogger(__name__)

# Called with the partition numbers; ``revoked`` returns the offsets its units committed
# last (partition -> offset), which the member shows the group before giving them up.
Assigned = Callable[[list[int]], None]
Revoked = Callable[[list[int]], dict[int, int]]


class GroupMember:
    """One worker's membership of the consumer group ``group`` on ``settings.topic``."""

    def __init__(
        self,
        settings: KafkaSettings,
        membership: KafkaGroupMembership,
        group: str,
        *,
        assigned: Assigned,
        revoked: Revoked,
        lost: Callable[[list[int]], object],
        where: str = "source",
    ) -> None:
        self.topic = settings.topic
        self.group = group
        self._assigned, self._revoked, self._lost = assigned, revoked, lost
        self._cooperative = membership.strategy == "cooperative-sticky"
        self.owned: set[int] = set()
        self.rebalances = 0
        self._consumer = Consumer(
            settings.properties(
                where,
                **membership.properties(),
                **{
                    "group.id": group,
                    "enable.auto.commit": False,
                    "enable.auto.offset.store": False,
                    "auto.offset.reset": "earliest",
                },
            )
        )
        self._consumer.subscribe(
            [self.topic],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )

    def poll(self) -> None:
        """Serve the group (heartbeats, rebalance callbacks) without waiting. A member
        polled less often than ``max.poll.interval.ms`` leaves the group."""
        message = self._consumer.poll(0)
        if message is not None and message.error() is None:
            # Fetched before the pause took effect: the unit reads it from its own offset.
            self._consumer.pause([TopicPartition(self.topic, message.partition())])

    def commit(self, offsets: dict[int, int]) -> None:
        """Show the group the committed checkpoint offsets of partitions this member owns
        (lag in Kafka's tooling). Informational: a failure is logged."""
        tps = [TopicPartition(self.topic, p, o) for p, o in offsets.items() if p in self.owned]
        if not tps:
            return
        try:
            self._consumer.commit(offsets=tps, asynchronous=True)
        except KafkaException as err:
            log.warning("Kafka group %s: offsets not committed: %s", self.group, err)

    def close(self) -> None:
        """Leave the group (its other members rebalance at once, without waiting for the
        session timeout). The caller has stopped its units first."""
        with contextlib.suppress(RuntimeError, KafkaException):
            self._consumer.close()

    # -- rebalance callbacks (inside poll, on the worker's thread) -----------------------
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.rebalances += 1
        numbers = sorted(tp.partition for tp in partitions)
        if self._cooperative:
            consumer.incremental_assign(partitions)
        else:
            consumer.assign(partitions)
        if partitions:
            consumer.pause(partitions)  # the units read; this member only holds them
        self.owned.update(numbers)
        if numbers:  # (cooperative rebalances also assign nothing new)
            log.info(
                "Kafka group %s: assigned partitions %s of %s", self.group, numbers, self.topic
            )
            self._assigned(numbers)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        numbers = sorted(tp.partition for tp in partitions)
        log.info("Kafka group %s: partitions %s of %s revoked", self.group, numbers, self.topic)
        if numbers:
            final = self._revoked(numbers)  # units stopped, last checkpoints committed
            self.commit(final)
        self.owned.difference_update(numbers)
        with contextlib.suppress(KafkaException):
            if self._cooperative:
                consumer.incremental_unassign(partitions)
            else:
                consumer.unassign()

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        numbers = sorted(tp.partition for tp in partitions)
        log.warning(
            "Kafka group %s: partitions %s of %s lost (this member was dropped from the"
            " group); stopping their units",
            self.group,
            numbers,
            self.topic,
        )
        self.owned.difference_update(numbers)
        if numbers:
            self._lost(numbers)
        with contextlib.suppress(KafkaException):
            if self._cooperative:
                consumer.incremental_unassign(partitions)
            else:
                consumer.unassign()
