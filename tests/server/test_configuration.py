"""Configuration: limits from JSON, `f5rt serve`'s arguments and its request defaults."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from f5rt.limits import Limits
from f5rt.synthesizer import SynthesisOptions


def test_limits_load_from_json_and_refuse_mistakes(tmp_path: Path) -> None:
    path = tmp_path / "limits.json"
    path.write_text(json.dumps({"max_text_chars": 100, "speed_range": [0.5, 2.0], "batch_window_ms": 0}))
    limits = Limits.from_json(path)
    assert limits.max_text_chars == 100 and limits.speed_range == (0.5, 2.0) and not limits.batching
    assert limits.queue_size == Limits().queue_size and Limits().batching
    bad_cases = [
        {"max_text_char": 100},  # typo: must not silently keep the default
        {"speed_range": [2.0, 1.0]},
        {"speed_range": [0.5]},
        {"nfe_range": [1.5, 8]},
        {"queue_size": 0},
        {"max_batch": True},
        {"request_timeout_s": 0},
        {"batch_window_ms": -1},
        {"max_body_bytes": "big"},
    ]
    for bad in bad_cases:
        path.write_text(json.dumps(bad))
        with pytest.raises(ValueError):
            Limits.from_json(path)
    path.write_text("[1, 2]")
    with pytest.raises(ValueError, match="object"):
        Limits.from_json(path)


def test_cli_serve_arguments_parse() -> None:
    """`f5rt serve` shares the CLI's engine options with the server's own (no argparse conflicts)."""
    from f5rt.cli import build_parser

    args = build_parser().parse_args(
        ["serve", "--artifacts", "a", "--voices", "v", "--port", "9000", "--batch-window-ms", "0", "--nfe", "16"]
    )
    assert (args.port, args.batch_window_ms, args.nfe, args.backend, args.host) == (9000, 0.0, 16, "auto", "127.0.0.1")


def test_serve_request_defaults_take_nfe_and_cfg_and_refuse_what_no_request_may_ask():
    """--nfe and --cfg set what a request without nfe_step / cfg_strength gets (a model's chat-reader default),
    checked by the same bounds as a request's own values."""
    from f5rt.cli import build_parser
    from f5rt.server.cli import request_defaults

    base = ["serve", "--artifacts", "a", "--voices", "v"]
    assert request_defaults(build_parser().parse_args(base)) == SynthesisOptions()
    chosen = request_defaults(build_parser().parse_args([*base, "--nfe", "7", "--cfg", "1"]))
    assert (chosen.nfe, chosen.cfg, chosen.sway) == (7, 1.0, SynthesisOptions().sway)
    for flag, value in (("--cfg", "-1"), ("--cfg", "50"), ("--nfe", "0")):
        with pytest.raises(ValueError, match=flag.lstrip("-")):
            request_defaults(build_parser().parse_args([*base, flag, value]))
