"""Prometheus metrics of one server (its own registry, so tests can run many servers)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class ServerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.latency = Histogram("kaon_request_seconds", "Request latency by route",
                                 ["route", "status"], buckets=LATENCY_BUCKETS,
                                 registry=self.registry)
        self.batch_size = Histogram("kaon_batch_size", "Items per model call",
                                    buckets=BATCH_BUCKETS, registry=self.registry)
        self.batch_seconds = Histogram("kaon_batch_seconds", "Model time per batch",
                                       buckets=LATENCY_BUCKETS, registry=self.registry)
        self.queue_depth = Gauge("kaon_queue_depth", "Items waiting for a batch",
                                 registry=self.registry)
        self.rejected = Counter("kaon_rejected_total", "Requests refused with 503 (queue full)",
                                registry=self.registry)
        self.dropped = Gauge("kaon_dropped_items", "Queued items dropped (caller went away)",
                             registry=self.registry)

        self.streams = Gauge("kaon_streams", "Open WebSocket streams", registry=self.registry)
        self.stream_dropped = Counter("kaon_stream_dropped_frames_total",
                                      "Frames dropped by drop_oldest streams",
                                      registry=self.registry)

    def observe_batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.batch_seconds.observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
