"""Prometheus metrics of one server, on a registry of its own (so that tests can
build many apps in one process)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from polku.adapters.sqlite.writer import CommitStats
from polku.core.events import Rejection
from polku.engine.ingest import IngestResult


class Metrics:
    def __init__(self, pending: Callable[[], int]) -> None:
        self.registry = CollectorRegistry()
        self.accepted = Counter(
            "polku_events_accepted", "Events stored in the log.", ["channel"], registry=self.registry
        )
        self.duplicates = Counter(
            "polku_events_duplicate",
            "Events not stored again: their messageId was already stored.",
            registry=self.registry,
        )
        self.rejected = Counter(
            "polku_events_rejected",
            "Messages refused, by reason code (quarantined).",
            ["reason"],
            registry=self.registry,
        )
        self.requests_refused = Counter(
            "polku_requests_refused", "Whole requests refused, by error code.", ["code"], registry=self.registry
        )
        self.commit_seconds = Histogram(
            "polku_commit_seconds",
            "Duration of one group commit of the event log.",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0),
            registry=self.registry,
        )
        self.commit_events = Histogram(
            "polku_commit_events",
            "Events (and rejections) in one group commit.",
            buckets=(1, 10, 100, 1000, 5000, 20000),
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "polku_ingest_queue_depth", "Events waiting for the next commit.", registry=self.registry
        )
        self.queue_depth.set_function(lambda: float(pending()))

    def observe_commit(self, stats: CommitStats) -> None:
        self.commit_seconds.observe(stats.seconds)
        self.commit_events.observe(stats.weight)

    def observe_result(self, channel: str, result: IngestResult, rejections: Sequence[Rejection]) -> None:
        # Per-event channel labels would cost a loop per request; the request's
        # default channel is what operators watch for a dead source.
        if result.accepted:
            self.accepted.labels(channel).inc(result.accepted)
        if result.duplicates:
            self.duplicates.inc(result.duplicates)
        for rejection in rejections:
            self.rejected.labels(rejection.code).inc()
