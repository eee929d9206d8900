"""The service's Prometheus metrics, on `prometheus_client` with one CollectorRegistry per app.

Only what an operator needs to see a TTS service misbehave: request counts by route and status,
latency and time to first audio, real-time factor (both per route), queue depth and capacity, how
full the batches are, and the process' memory (prometheus_client's process collector) for leak
alerts. `deploy/grafana/f5rt.json` and `deploy/prometheus/alerts.yml` are built on these names;
tests/test_dashboards.py keeps them in step.

Why a registry per app and not prometheus_client's global one: tests and embedders create several
apps in one process, and a global registry would refuse the second app's metric names (or, worse,
mix their counts). The thin wrappers keep the call sites of the hand-written exporter this replaced
(`metrics.requests.inc(route=..., status=...)`, `metrics.batch_size.observe(n)`) and add reads
(`value`, `count`) through the registry's public `get_sample_value`.

prometheus_client is in the `serve` extra; it is imported when a Metrics is made (by the server and
the batcher the server builds), so `import f5rt` works without it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

LATENCY_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
RTF_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0)
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _client() -> Any:
    try:
        import prometheus_client
    except ImportError:
        raise ImportError("f5rt's metrics need prometheus_client: pip install 'f5rt[serve]'") from None
    return prometheus_client


class _Family:
    """One metric family with fixed label names; every update names exactly those labels."""

    def __init__(self, metric: Any, name: str, labelnames: Sequence[str], registry: Any) -> None:
        self._metric, self.name, self.labelnames, self._registry = metric, name, tuple(labelnames), registry

    def _child(self, labels: dict[str, str]) -> Any:
        if set(labels) != set(self.labelnames):
            raise ValueError(f"{self.name} takes labels {list(self.labelnames)}, got {sorted(labels)}")
        return self._metric.labels(**labels) if self.labelnames else self._metric

    def _sample(self, suffix: str, labels: dict[str, str]) -> float:
        return self._registry.get_sample_value(self.name + suffix, labels) or 0.0


class Counter(_Family):
    def inc(self, amount: float = 1.0, **labels: str) -> None:
        self._child(labels).inc(amount)

    def value(self, **labels: str) -> float:
        return self._sample("", labels)


class Histogram(_Family):
    def observe(self, value: float, **labels: str) -> None:
        self._child(labels).observe(value)

    def count(self, **labels: str) -> int:
        return int(self._sample("_count", labels))


class Metrics:
    """The service's metric families in their own registry; `render()` is the body of GET /metrics."""

    def __init__(self, prefix: str = "f5rt", process: bool = True) -> None:
        pc = _client()
        self.registry = pc.CollectorRegistry(auto_describe=True)
        self.prefix = p = prefix

        def counter(name: str, help_text: str, labels: Sequence[str]) -> Counter:
            metric = pc.Counter(name, help_text, labels, registry=self.registry)
            return Counter(metric, name, labels, self.registry)

        def histogram(name: str, help_text: str, labels: Sequence[str], buckets: Sequence[float]) -> Histogram:
            metric = pc.Histogram(name, help_text, labels, buckets=buckets, registry=self.registry)
            return Histogram(metric, name, labels, self.registry)

        route = ("route",)
        self.requests = counter(
            f"{p}_requests_total", "HTTP requests by endpoint and status code.", ("route", "status")
        )
        self.audio_seconds = counter(f"{p}_audio_seconds_total", "Seconds of audio synthesized.", route)
        self.latency = histogram(
            f"{p}_request_latency_seconds", "Request latency (to the last byte).", route, LATENCY_BUCKETS
        )
        self.ttfa = histogram(
            f"{p}_time_to_first_audio_seconds", "Time to first audio byte, per route.", route, LATENCY_BUCKETS
        )
        self.rtf = histogram(
            f"{p}_real_time_factor", "Synthesis time over audio duration, per route.", route, RTF_BUCKETS
        )
        self.batch_size = histogram(f"{p}_batch_size", "Requests per synthesizer call.", (), BATCH_BUCKETS)
        self.rejected = counter(f"{p}_rejected_total", "Requests refused before synthesis, by reason.", ("reason",))
        if process:  # process_resident_memory_bytes & co. (Linux /proc; absent elsewhere): the memory alerts
            pc.ProcessCollector(registry=self.registry)

    def gauge(self, name: str, help_text: str, read: Callable[[], float]) -> None:
        """Register a gauge read at scrape time (queue depth, in-flight requests, readiness), never stale."""
        _client().Gauge(name, help_text, registry=self.registry).set_function(lambda: float(read()))

    def render(self) -> str:
        return _client().generate_latest(self.registry).decode("utf-8")

    def names(self) -> set[str]:
        """Every sample name the registry exposes now (histogram _bucket/_sum/_count included)."""
        return {s.name for family in self.registry.collect() for s in family.samples}
