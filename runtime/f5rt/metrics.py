"""Prometheus metrics in the text exposition format, hand-written so `serve` needs no client library.

Only what an operator needs to see a TTS service misbehave: request counts by outcome, latency and
time to first audio, real-time factor, queue depth and how full the batches are. All updates take
one lock: they happen a few times per request, far below any contention that would matter.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence
from typing import TypeVar

LATENCY_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
RTF_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0)

LabelKey = tuple[tuple[str, str], ...]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(key: LabelKey, extra: tuple[tuple[str, str], ...] = ()) -> str:
    pairs = key + extra
    if not pairs:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in pairs) + "}"


def _num(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer():
        return str(int(value))
    return repr(float(value))


class _Metric:
    kind = ""

    def __init__(self, name: str, help_text: str, lock: threading.Lock) -> None:
        self.name, self.help, self._lock = name, help_text, lock

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]

    def render(self) -> list[str]:
        raise NotImplementedError


class Counter(_Metric):
    kind = "counter"

    def __init__(self, name: str, help_text: str, lock: threading.Lock) -> None:
        super().__init__(name, help_text, lock)
        self._values: dict[LabelKey, float] = {}

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def value(self, **labels: str) -> float:
        with self._lock:
            return self._values.get(tuple(sorted(labels.items())), 0.0)

    def render(self) -> list[str]:
        lines = self.header()
        lines += [f"{self.name}{_labels(k)} {_num(v)}" for k, v in sorted(self._values.items())]
        return lines


class Gauge(_Metric):
    """A value read at scrape time from a callback, so it can never drift from the real state."""

    kind = "gauge"

    def __init__(self, name: str, help_text: str, lock: threading.Lock, read: Callable[[], float]) -> None:
        super().__init__(name, help_text, lock)
        self._read = read

    def render(self) -> list[str]:
        return [*self.header(), f"{self.name} {_num(float(self._read()))}"]


class Histogram(_Metric):
    kind = "histogram"

    def __init__(self, name: str, help_text: str, lock: threading.Lock, buckets: Sequence[float]) -> None:
        super().__init__(name, help_text, lock)
        self.buckets = tuple(sorted(buckets))
        self._series: dict[LabelKey, list[float]] = {}  # per-bucket counts..., then sum, then count

    def observe(self, value: float, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            s = self._series.setdefault(key, [0.0] * (len(self.buckets) + 2))
            for i, bound in enumerate(self.buckets):
                if value <= bound:
                    s[i] += 1
            s[-2] += value
            s[-1] += 1

    def count(self, **labels: str) -> int:
        with self._lock:
            s = self._series.get(tuple(sorted(labels.items())))
            return int(s[-1]) if s else 0

    def render(self) -> list[str]:
        lines = self.header()
        for key, s in sorted(self._series.items()):
            for bound, n in zip(self.buckets, s[:-2], strict=True):
                lines.append(f"{self.name}_bucket{_labels(key, (('le', _num(bound)),))} {_num(n)}")
            lines.append(f"{self.name}_bucket{_labels(key, (('le', '+Inf'),))} {_num(s[-1])}")
            lines.append(f"{self.name}_sum{_labels(key)} {_num(s[-2])}")
            lines.append(f"{self.name}_count{_labels(key)} {_num(s[-1])}")
        return lines


_M = TypeVar("_M", bound=_Metric)


class Metrics:
    """The service's metric families; `render()` is the body of GET /metrics."""

    def __init__(self, prefix: str = "f5rt") -> None:
        self._lock = threading.Lock()
        self._metrics: list[_Metric] = []
        p = prefix
        self.requests = self._add(
            Counter(f"{p}_requests_total", "HTTP requests by endpoint and status code.", self._lock)
        )
        self.audio_seconds = self._add(Counter(f"{p}_audio_seconds_total", "Seconds of audio synthesized.", self._lock))
        self.latency = self._add(
            Histogram(
                f"{p}_request_latency_seconds", "Request latency (to the last byte).", self._lock, LATENCY_BUCKETS
            )
        )
        self.ttfa = self._add(
            Histogram(f"{p}_time_to_first_audio_seconds", "Time to first audio byte.", self._lock, LATENCY_BUCKETS)
        )
        self.rtf = self._add(
            Histogram(f"{p}_real_time_factor", "Synthesis time over audio duration.", self._lock, RTF_BUCKETS)
        )
        self.batch_size = self._add(
            Histogram(f"{p}_batch_size", "Requests per synthesizer call.", self._lock, (1, 2, 3, 4, 6, 8, 12, 16))
        )
        self.rejected = self._add(
            Counter(f"{p}_rejected_total", "Requests refused before synthesis, by reason.", self._lock)
        )

    def _add(self, metric: _M) -> _M:
        self._metrics.append(metric)
        return metric

    def gauge(self, name: str, help_text: str, read: Callable[[], float]) -> None:
        """Register a gauge read at scrape time (queue depth, in-flight requests, readiness)."""
        self._add(Gauge(name, help_text, self._lock, read))

    def render(self) -> str:
        lines: list[str] = []
        for metric in self._metrics:
            if isinstance(metric, Gauge):
                lines += metric.render()  # the callback may take other locks: never call it under ours
            else:
                with self._lock:
                    lines += metric.render()
        return "\n".join(lines) + "\n"
