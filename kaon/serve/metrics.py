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
        self.rejected = Counter("kaon_rejected_total",
                                "Requests (503) and stream frames refused: the queue was full",
                                registry=self.registry)
        self.dropped = Gauge("kaon_dropped_items", "Queued images dropped (caller went away)",
                             registry=self.registry)

        self.streams = Gauge("kaon_streams", "Open WebSocket streams", registry=self.registry)
        self.stream_dropped = Counter("kaon_stream_dropped_frames_total",
                                      "Frames dropped by drop_oldest streams",
                                      registry=self.registry)
        self.stream_dropped_per_stream = Histogram(
            "kaon_stream_dropped_per_stream", "Frames dropped per stream, observed when it closes",
            ["policy"], buckets=(0, 1, 5, 25, 100, 500, 2500), registry=self.registry)

    def observe_batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.batch_seconds.observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)



def merge(texts: dict[str, str], label: str = "replica") -> bytes:
    """Several servers' Prometheus expositions as one, each sample labelled with its source.

    ``texts`` maps a source (a replica's index) to its ``/metrics`` text; families keep their
    HELP and TYPE once, so histograms stay histograms for Prometheus.
    """
    from prometheus_client.parser import text_string_to_metric_families
    from prometheus_client.utils import floatToGoString

    families: dict[str, tuple[str, str, list[str]]] = {}
    for source, text in texts.items():
        for family in text_string_to_metric_families(text):
            _, _, lines = families.setdefault(family.name,
                                              (family.documentation, family.type, []))
            for sample in family.samples:
                labels = ",".join(f'{k}="{_escape(v)}"'
                                  for k, v in {**sample.labels, label: source}.items())
                lines.append(f"{sample.name}{{{labels}}} {floatToGoString(sample.value)}")
    out = []
    for name, (doc, kind, lines) in families.items():
        name = f"{name}_total" if kind == "counter" else name  # as prometheus_client writes it
        out += [f"# HELP {name} {_escape(doc)}", f"# TYPE {name} {kind}", *lines]
    return ("\n".join(out) + "\n").encode() if out else b""


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
