"""Request metrics middleware: every response counted by route and status, timed to its last byte."""

from __future__ import annotations

import re
import time
from typing import Any

from f5rt.metrics import Metrics

_ROUTE_LABELS = (
    (re.compile(r"^/api/tts$"), "/api/tts"),
    (re.compile(r"^/api/voices$"), "/api/voices"),
    (re.compile(r"^/api/voices/[^/]*$"), "/api/voices/{voice_id}"),
    (re.compile(r"^/api/health$"), "/api/health"),
    (re.compile(r"^/v1/audio/speech$"), "/v1/audio/speech"),
    (re.compile(r"^/v1/models(/[^/]*)?$"), "/v1/models"),
    (re.compile(r"^/metrics$"), "/metrics"),
)


def route_label(path: str) -> str:
    """A bounded label set: arbitrary 404 paths must not create new metric series."""
    return next((label for rx, label in _ROUTE_LABELS if rx.match(path)), "other")


class MetricsMiddleware:
    """Pure ASGI, outermost: sees auth refusals (401/403) and streams cut off mid-body (499) alike."""

    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        label = route_label(scope.get("path", ""))
        t0 = time.monotonic()
        state = {"status": 500, "started": False, "done": False}

        async def send_wrapper(message: Any) -> None:
            if message["type"] == "http.response.start":
                state["status"], state["started"] = message["status"], True
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                state["done"] = True

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            # Not started: an unhandled error (500). Started but unfinished: a stream cut off (499).
            status = state["status"] if state["done"] or not state["started"] else 499
            self.metrics.requests.inc(route=label, status=str(status))
            if status < 400:
                self.metrics.latency.observe(time.monotonic() - t0, route=label)
