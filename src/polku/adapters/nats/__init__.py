"""The scale-out event log: NATS JetStream as the log of record, its queryable index
and the quarantine in PostgreSQL (docs/nats.md)."""

from polku.adapters.nats.event_log import NatsEventLog
from polku.adapters.nats.routing import message_id, partition, routing_key

__all__ = ["NatsEventLog", "message_id", "partition", "routing_key"]
