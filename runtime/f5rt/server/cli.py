"""`f5rt serve` (and `python -m f5rt.server`): arguments, keys from flags and environment, uvicorn."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
from typing import Any

from f5rt.limits import Limits
from f5rt.names import AUTO, BACKENDS, PRECISIONS
from f5rt.options import SynthesisOptions
from f5rt.server.auth import AuthConfig, check_bind, split_keys

log = logging.getLogger("f5rt.server")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of `f5rt serve` (the CLI adds them to its `serve` sub-command).

    Engine options the parser already has (the CLI's shared --artifacts/--backend/...) are kept as they are.
    """

    def opt(flag: str, **kw: Any) -> None:
        if flag not in p._option_string_actions:
            p.add_argument(flag, **kw)

    opt("--artifacts", type=Path, required=True, help="artifacts folder (manifest.json + graphs/engines)")
    opt("--backend", default=AUTO, choices=BACKENDS)
    opt("--precision", default=AUTO, help=f"{' | '.join((AUTO, *PRECISIONS))} (see `f5rt synth --help`)")
    opt("--threads", type=int, help="CPU threads for ONNX Runtime (default: the CPUs this process may use)")
    opt("--ort-spinning", choices=("on", "off"), help="ONNX Runtime's idle threads spin (default off)")
    p.add_argument("--voices", type=Path, required=True, help="voices folder: <id>/ref.wav + <id>/ref.txt")
    p.add_argument("--voice-cache", type=Path, help="mel cache folder (default: inside the voices folder)")
    p.add_argument("--default-voice", help="voice used when a request names none (default: first by name)")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1; 0.0.0.0 needs --api-key)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--limits", type=Path, help="JSON file overriding f5rt.limits.Limits defaults")
    p.add_argument("--batch-window-ms", type=float, help="override limits.batch_window_ms (0 = no batching)")
    p.add_argument("--max-batch", type=int, help="override limits.max_batch")
    p.add_argument("--nfe", type=int, help="default NFE steps for requests that do not set nfe_step (default 32)")
    p.add_argument(
        "--cfg",
        type=float,
        help="default classifier-free guidance strength for requests that do not set cfg_strength (default 2, "
        "f5-tts'; a model's quality report names the strength it says its text best with)",
    )
    p.add_argument("--no-warmup", action="store_true", help="skip warm-up (health is ready at once)")
    p.add_argument("--log-level", default="info")
    g = p.add_argument_group("authentication (Authorization: Bearer <key>)")
    g.add_argument(
        "--api-key", action="append", default=[], metavar="KEY",
        help="inference key, repeatable; also F5RT_API_KEY (comma-separated). None: inference is open",
    )  # fmt: skip
    g.add_argument(
        "--admin-key", action="append", default=[], metavar="KEY",
        help="key that may also add/replace/delete voices, repeatable; also F5RT_ADMIN_KEY (comma-separated)",
    )  # fmt: skip
    g.add_argument("--metrics-auth", action="store_true", help="/metrics needs a key too (default: open)")
    g.add_argument(
        "--insecure-no-auth", action="store_true",
        help="allow a non-loopback --host without API keys (e.g. behind an authenticating proxy)",
    )  # fmt: skip


def auth_config(args: argparse.Namespace, environ: dict[str, str] | None = None) -> AuthConfig:
    """Keys from the flags plus the environment (F5RT_API_KEY / F5RT_ADMIN_KEY, comma-separated)."""
    env = os.environ if environ is None else environ
    return AuthConfig.from_keys(
        split_keys([*getattr(args, "api_key", []), env.get("F5RT_API_KEY")]),
        split_keys([*getattr(args, "admin_key", []), env.get("F5RT_ADMIN_KEY")]),
        metrics_auth=bool(getattr(args, "metrics_auth", False)),
    )


def load_limits(args: argparse.Namespace) -> Limits:
    limits = Limits.from_json(args.limits) if args.limits else Limits()
    changes: dict[str, Any] = {}
    if args.batch_window_ms is not None:
        changes["batch_window_ms"] = args.batch_window_ms
    if args.max_batch is not None:
        changes["max_batch"] = args.max_batch
    return limits.replace(**changes) if changes else limits


def request_defaults(args: argparse.Namespace) -> SynthesisOptions:
    """What a request's absent fields take: f5-tts' defaults, with --nfe and --cfg where given (checked)."""
    given = {name: getattr(args, name, None) for name in ("nfe", "cfg")}
    defaults = SynthesisOptions(**{k: v for k, v in given.items() if v is not None})
    defaults.validate()
    return defaults


def serve(args: argparse.Namespace) -> int:
    """Check the bind and keys, load the synthesizer and voices, then run uvicorn until interrupted."""
    auth = auth_config(args)
    check_bind(args.host, auth, args.insecure_no_auth)  # before loading anything: a refusal is instant
    try:
        import uvicorn
    except ImportError:
        raise SystemExit("f5rt serve needs the 'serve' extra: pip install 'f5rt[serve]'") from None
    from f5rt.backends.onnxruntime import thread_setting
    from f5rt.server.app import create_app
    from f5rt.synthesizer import Synthesizer
    from f5rt.voices import VoiceStore

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    limits = load_limits(args)
    # serve's engine runs one batch at a time on one thread, beside the event loop that streams the
    # audio out: the ONNX Runtime default policy (all usable CPUs, no spinning) leaves that loop
    # the time slices a spinning pool would take (f5rt.backends.onnxruntime.ThreadPolicy)
    threads = thread_setting(args.threads, getattr(args, "ort_spinning", None))
    synth = Synthesizer(args.artifacts, backend=args.backend, precision=args.precision, threads=threads)
    store = VoiceStore(args.voices, cache_dir=args.voice_cache)
    if args.default_voice is not None and args.default_voice not in store.list():
        raise SystemExit(f"--default-voice {args.default_voice!r} is not in {args.voices}")
    defaults = request_defaults(args)
    app = create_app(
        synth, store, limits, default_voice=args.default_voice, warmup=not args.no_warmup, defaults=defaults, auth=auth
    )
    mode = f"keys: {len(auth.api_keys)} inference, {len(auth.admin_keys)} admin" if auth.enabled else "no keys"
    log.info("serving %s (%s) on http://%s:%d (%s)", args.artifacts, synth.backend_name, args.host, args.port, mode)
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, workers=1)
    finally:
        synth.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m f5rt.server", description="Serve F5-TTS over HTTP.")
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return serve(args)
    except ValueError as e:  # bad keys or limits: say what to fix, no traceback
        raise SystemExit(f"f5rt serve: error: {e}") from None
