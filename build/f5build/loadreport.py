"""The load test's report: per-round tables, medians over rounds, before/after, reports/load.{md,json}.

Apart from `f5build.loadtest` so the measuring and the reading of its numbers stay one concept each.
A shared machine is noisy, so every headline figure is a median over rounds run back to back on one
server, and the report shows the spread and the load average of every round next to it.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

from f5rt.files import atomic_write_bytes, atomic_write_json


def median(values: list[float]) -> float:
    vals = [v for v in values if isinstance(v, float) and not math.isnan(v)]
    return float(statistics.median(vals)) if vals else math.nan


def headline(report: dict[str, Any]) -> dict[str, float]:
    """The figures compared before/after; reads this format and the one before rounds (runs.stream)."""
    runs = report.get("runs", {})
    out = {
        "tts_batched_rps": runs.get("batched", {}).get("throughput_rps", math.nan),
        "tts_unbatched_rps": runs.get("unbatched", {}).get("throughput_rps", math.nan),
    }
    if "summary" in report:
        out.update(report["summary"])
    elif "stream" in runs:  # one stream run at full concurrency, no lone stream
        out["burst_ttfa_p50_s"] = runs["stream"].get("ttfa_p50_s", math.nan)
        out["burst_ttfa_p95_s"] = runs["stream"].get("ttfa_p95_s", math.nan)
        out["burst_stream_rps"] = runs["stream"].get("throughput_rps", math.nan)
    return {k: (math.nan if v is None else float(v)) for k, v in out.items() if not isinstance(v, dict)}


def summarize_rounds(rounds: dict[str, list[dict[str, Any]]]) -> dict[str, float]:
    lone, burst, mixed = rounds["lone"], rounds["burst"], rounds["mixed"]
    ratios = [b["ttfa_p50_s"] / a["ttfa_p50_s"] for a, b in zip(lone, burst, strict=True) if a["ttfa_p50_s"]]
    p50s = [b["ttfa_p50_s"] for b in burst]
    return {
        "lone_ttfa_p50_s": median([r["ttfa_p50_s"] for r in lone]),
        "burst_ttfa_p50_s": median(p50s),
        "burst_ttfa_p95_s": median([r["ttfa_p95_s"] for r in burst]),
        "burst_ttfa_p50_min_s": min(p50s, default=math.nan),
        "burst_ttfa_p50_max_s": max(p50s, default=math.nan),
        "burst_over_lone": median(ratios),
        "burst_stream_rps": median([r["throughput_rps"] for r in burst]),
        "burst_mean_batch": median([r["mean_batch"] for r in burst]),
        "mixed_stream_ttfa_p50_s": median([r["stream_ttfa_p50_s"] for r in mixed]),
        "mixed_stream_ttfa_p95_s": median([r["stream_ttfa_p95_s"] for r in mixed]),
        "mixed_tts_latency_p50_s": median([r["tts_latency_p50_s"] for r in mixed]),
        "mixed_mean_batch": median([r["mean_batch"] for r in mixed]),
    }


def _fmt(v: Any, digits: int = 3) -> str:
    if isinstance(v, float):
        return "n/a" if math.isnan(v) else f"{v:.{digits}f}"
    return str(v)


COLUMNS = [
    ("run", None), ("requests", "requests"), ("ok", "ok"), ("errors", "errors"), ("req/s", "throughput_rps"),
    ("audio s/s", "audio_s_per_s"), ("p50 s", "latency_p50_s"), ("p95 s", "latency_p95_s"),
    ("TTFA p50 s", "ttfa_p50_s"), ("TTFA p95 s", "ttfa_p95_s"), ("mean batch", "mean_batch"), ("load", "load_avg_1m"),
]  # fmt: skip
HEADLINE = [
    ("streams' TTFA p50 under a burst (s)", "burst_ttfa_p50_s"),
    ("streams' TTFA p95 under a burst (s)", "burst_ttfa_p95_s"),
    ("lone stream TTFA p50 (s)", "lone_ttfa_p50_s"),
    ("burst p50 / lone p50", "burst_over_lone"),
    ("streams' TTFA p50 among /api/tts (s)", "mixed_stream_ttfa_p50_s"),
    ("streams' TTFA p95 among /api/tts (s)", "mixed_stream_ttfa_p95_s"),
    ("stream throughput under a burst (req/s)", "burst_stream_rps"),
    ("/api/tts batched throughput (req/s)", "tts_batched_rps"),
    ("/api/tts unbatched throughput (req/s)", "tts_unbatched_rps"),
]


def _row(name: str, r: dict[str, Any]) -> str:
    cells = [name]
    for _, k in COLUMNS[1:]:
        v = r.get(k, math.nan)
        if isinstance(v, dict):
            cells.append(json.dumps(v) if v else "0")
        elif isinstance(v, list):
            cells.append("–".join(f"{x:.1f}" for x in v))
        else:
            cells.append(_fmt(v))
    return "| " + " | ".join(cells) + " |"


def write_report(report: dict[str, Any], out_dir: Path) -> None:
    cfg, runs, head = report["config"], report["runs"], report["headline"]
    lines = [
        "# Load test: f5rt serve (loopback)",
        "",
        f"Artifacts `{cfg['artifacts']}`, backend {cfg['backend']} ({cfg.get('precision', 'fp32')}), nfe {cfg['nfe']}, concurrency "
        f"{cfg['concurrency']}, window {cfg['batch_window_ms']} ms, max batch {cfg['max_batch']}; "
        f"{cfg['requests']} /api/tts requests per throughput run (unbatched = window 0); {cfg['repeats']} "
        f"rounds of: {cfg['lone_requests']} lone streams (concurrency 1), a burst of {cfg['stream_requests']} "
        f"streams, a mixed burst of {cfg['mixed_requests']} (half streams). Host: {cfg['host']}.",
        "",
        "## Headline (medians over the rounds)",
        "",
    ]
    before = report.get("before")
    if before:
        lines += ["| metric | before | after |", "|---|---|---|"]
        lines += [
            f"| {label} | {_fmt(before.get(k, math.nan))} | {_fmt(head.get(k, math.nan))} |" for label, k in HEADLINE
        ]
        lines += ["", f"Before: `{report['before_source']}`."]
    else:
        lines += ["| metric | value |", "|---|---|"] + [
            f"| {label} | {_fmt(head.get(k, math.nan))} |" for label, k in HEADLINE
        ]
    goal = head.get("burst_over_lone", math.nan)
    rps = head.get("burst_stream_rps", math.nan)
    littles_law = cfg["concurrency"] / rps if rps and not math.isnan(rps) else math.nan
    lines += [
        "",
        f"Goal: streams' TTFA p50 under a burst within 3x of a lone stream's: **{_fmt(goal, 2)}x** "
        f"({'met' if goal <= 3 else 'not met'}). Burst TTFA p50 over the rounds: "
        f"{_fmt(head.get('burst_ttfa_p50_min_s', math.nan))}–{_fmt(head.get('burst_ttfa_p50_max_s', math.nan))} s "
        f"(the spread is the machine's noise; load average per round in the last column).",
        "",
        f"Why the burst ratio is bounded on a CPU: with {cfg['concurrency']} clients resubmitting at once, up to "
        f"{cfg['concurrency']} first pieces always compete. They need that many first chunks' compute, and where a "
        "batch of B rows costs about B times one row (CPU), the median stream waits for about half of them "
        "whatever the order. First-piece priority takes everything else out of their way (later pieces, whole "
        "requests: see the mixed round, and the gap between TTFA and latency in the burst rows); within 3x "
        "needs a device where a B = 4 call costs little more than B = 1 (the GPU engines). Little's law: mean "
        f"time in the system = concurrency / throughput = {_fmt(littles_law, 1)} s.",
        "",
        "## Runs",
        "",
        "| " + " | ".join(c for c, _ in COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    for name in ("batched", "unbatched"):
        if name in runs:
            lines.append(_row(name, runs[name]))
    for kind in ("lone", "burst", "mixed"):
        for i, r in enumerate(runs.get(kind, [])):
            lines.append(_row(f"{kind} {i + 1}", r))
    lines += [
        "",
        "TTFA for /api/tts is the whole latency (the response is one JSON body); streams measure the first "
        "audio bytes of /v1/audio/speech (short first chunk). Mean batch: rows per engine call from "
        "f5rt_batch_size. Errors must be 0.",
    ]
    for name, r in runs.items():
        for i, x in enumerate(r if isinstance(r, list) else [r]):
            if x["first_errors"]:
                lines.append(f"\nErrors in {name} {i + 1}: " + "; ".join(x["first_errors"]))
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out_dir / "load.md", ("\n".join(lines) + "\n").encode("utf-8"))
    atomic_write_json(out_dir / "load.json", _jsonable(report))


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    return obj
