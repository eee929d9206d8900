"""`f5rt`: the command line services call. One clear line and a non-zero exit on any error.

f5rt synth --artifacts artifacts/tiny --voice voices/alice --text "你好" --out out.wav
f5rt info --artifacts artifacts/tiny
f5rt bench --artifacts artifacts/tiny --voice voices/alice
f5rt serve --artifacts artifacts/tiny --voices voices/
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

from f5rt.errors import F5RTError
from f5rt.names import AUTO, BACKENDS, PRECISIONS


def _synth_options(args: argparse.Namespace):  # -> SynthesisOptions (imported lazily: keeps --help fast)
    from f5rt.synthesizer import SynthesisOptions

    return SynthesisOptions(
        nfe=args.nfe,
        cfg=args.cfg,
        sway=args.sway,
        speed=args.speed,
        seed=args.seed,
        target_rms=args.target_rms,
        cross_fade=args.cross_fade,
        fix_duration=args.fix_duration,
        remove_silence=args.remove_silence,
        use_epss=not args.no_epss,
        solver=args.solver,
    )


def _add_engine(p: argparse.ArgumentParser) -> None:
    p.add_argument("--artifacts", required=True, type=Path, help="artifacts folder (holds manifest.json)")
    p.add_argument("--backend", default=AUTO, choices=BACKENDS)
    p.add_argument(
        "--precision",
        default=AUTO,
        help=f"{' | '.join((AUTO, *PRECISIONS))}: fp32/fp16/int8 are TensorRT deployments (fp32 also ONNX Runtime), "
        "cpu-fp32/cpu-int8 ONNX Runtime graphs; "
        "auto: the most reduced TensorRT deployment, or cpu-int8 on ONNX Runtime when validate passed it, else fp32",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads for ONNX Runtime (default: the CPUs this process may use: affinity mask, cgroup quota)",
    )
    p.add_argument(
        "--ort-spinning",
        choices=("on", "off"),
        default=None,
        help="let ONNX Runtime's idle threads spin (default off: spinning only pays on cores nothing else uses)",
    )


def _threads(args: argparse.Namespace):  # -> int | ThreadPolicy | None
    from f5rt.backends.onnxruntime import thread_setting

    return thread_setting(args.threads, getattr(args, "ort_spinning", None))


def _add_voice(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--voice", type=Path, help="voice folder holding ref.wav (or ref.flac) and ref.txt")
    g.add_argument("--ref-audio", type=Path, help="reference recording (with --ref-text)")
    p.add_argument("--ref-text", help="transcript of --ref-audio")


def _add_sampling(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--nfe", type=int, default=32, help="step-graph calls (Euler: EPSS schedules for 5, 6, 7, 10, 12, 16)"
    )
    p.add_argument(
        "--solver",
        choices=("euler", "midpoint"),
        default="euler",
        help="euler (f5-tts') or midpoint (two step-graph calls per step, --nfe even; ONNX Runtime backend)",
    )
    p.add_argument("--no-epss", action="store_true", help="uniform time grid (+ sway) even where EPSS has a table")
    p.add_argument("--cfg", type=float, default=2.0, help="classifier-free guidance strength")
    p.add_argument("--sway", type=float, default=-1.0, help="sway sampling coefficient")
    p.add_argument("--speed", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=None, help="noise seed (default: random, printed)")
    p.add_argument("--target-rms", type=float, default=0.1)
    p.add_argument("--cross-fade", type=float, default=0.15, help="seconds of cross-fade between chunks")
    p.add_argument("--fix-duration", type=float, default=None, help="total seconds (reference included)")
    p.add_argument("--remove-silence", action="store_true")


def _voice(args: argparse.Namespace, synth):  # -> Voice
    from f5rt.voices import VoiceStore

    if args.voice is not None:
        store = VoiceStore(args.voice.parent)
        return store.get(args.voice.name)
    if not args.ref_text:
        raise F5RTError("--ref-audio needs --ref-text (the transcript of the reference)")
    if not args.ref_audio.is_file():
        raise F5RTError(f"reference audio {args.ref_audio} not found")
    return synth.voice_from_audio(args.ref_audio, args.ref_text)


def cmd_synth(args: argparse.Namespace) -> int:
    from f5rt.audio import write_wav
    from f5rt.synthesizer import Synthesizer

    if (args.text is None) == (args.text_file is None):
        raise F5RTError("give exactly one of --text or --text-file")
    text = args.text if args.text is not None else args.text_file.read_text(encoding="utf-8")
    opts = _synth_options(args)
    opts.validate()
    with Synthesizer(args.artifacts, backend=args.backend, precision=args.precision, threads=_threads(args)) as synth:
        voice = _voice(args, synth)
        result = synth.synthesize(text, voice, opts)
    write_wav(args.out, result.audio, result.sample_rate)
    rtf = result.timings["total"] / max(result.seconds, 1e-9)
    print(
        f"{args.out}: {result.seconds:.2f} s of audio, {len(result.chunks)} chunk(s), seed {result.seed}, "
        f"{result.timings['total']:.2f} s (RTF {rtf:.3f}) on {synth.backend_name}/{synth.precision}"
    )
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from f5rt.backends.onnxruntime import available as ort_available
    from f5rt.backends.trt.backend import unavailable_reason
    from f5rt.jetson import read_jetson_clocks
    from f5rt.manifest import load_manifest
    from f5rt.names import AUTO, GRAPHS
    from f5rt.precision import resolve, validated

    m = load_manifest(args.artifacts)
    verified = m.verify_all()  # every recorded file, hashes included: the first missing or changed one fails
    trt_reason = unavailable_reason()
    trt = trt_reason is None
    clocks = read_jetson_clocks()
    info = {
        "name": m.name,
        "source": m.data.get("source", {}),
        "model": m.model,
        "buckets": m.buckets.to_dict(),
        "precisions": {g: m.precisions(g) for g in GRAPHS},
        "engines": {g: m.precisions(g, kind="engine") for g in GRAPHS},
        "files_verified": verified,
        "stages": {
            k: {kk: vv for kk, vv in v.items() if kk in ("seconds", "status", "tools")}
            for k, v in m.data.get("stages", {}).items()
        },
        "vocoder": m.data.get("vocoder"),
        "deployments": m.data.get("deployments", {}),
        "auto_precision": {"onnxruntime": resolve(m, "onnxruntime", AUTO), "tensorrt": resolve(m, "tensorrt", AUTO)},
        "validated": {p: validated(m, p) for p in m.precisions("step") if p != "fp32"},
        "backends": {"onnxruntime": ort_available(), "tensorrt": trt},
        "tensorrt_unavailable": trt_reason,
        "jetson": None if clocks is None else {**asdict(clocks), "clocks_locked": clocks.locked},
    }
    if args.json:
        print(json.dumps(info, indent=2, ensure_ascii=False))
        return 0
    print(f"artifacts   {m.root} ({m.name}, source {info['source'].get('kind', '?')})")
    model = info["model"]
    print(
        f"model       dim {model.get('dim')} depth {model.get('depth')} heads {model.get('heads')} text_dim {model.get('text_dim')} vocab {model.get('vocab_size')}"
    )
    print(f"buckets     frames {info['buckets']['frames']} x batch {info['buckets']['batch']}")
    print(f"files       {verified} recorded in the manifest, all present and matching their sha256")
    width = max(12, *(len(g) + 2 for g in GRAPHS))  # "text_encoder" is 12 characters: keep a gap after it
    for g in GRAPHS:
        print(
            f"{g:<{width}}onnx {', '.join(info['precisions'][g]) or '-'}; engines {', '.join(info['engines'][g]) or '-'}"
        )
    if info["vocoder"]:
        v = info["vocoder"]
        print(f"vocoder     {v.get('padding')} padding: {v.get('samples')} samples for F mel frames")
    for name, graphs in info["deployments"].items():
        print(f"deployment  {name}: " + ", ".join(f"{g} {p}" for g, p in graphs.items()))
    print("backends    " + ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in info["backends"].items()))
    checked = ", ".join(f"{p} {'passed' if ok else 'not passed'}" for p, ok in info["validated"].items()) or "none"
    print(f"precision   auto = {info['auto_precision']['onnxruntime']} on ONNX Runtime; validate gates: {checked}")
    if trt_reason:
        print(f"tensorrt    {trt_reason}")
    if clocks is not None:
        print(f"jetson      {clocks.model}: {clocks.advice()}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from f5rt.synthesizer import Synthesizer

    texts = args.text or [
        "Hello everyone, welcome to the stream!",
        "谢谢大家的礼物，今天我们一起玩到很晚吧。",
        "This is a longer line to measure the steady state: the quick brown fox jumps over the lazy dog, twice.",
    ]
    opts = _synth_options(args)
    opts.validate()
    rows = []
    with Synthesizer(args.artifacts, backend=args.backend, precision=args.precision, threads=_threads(args)) as synth:
        voice = _voice(args, synth)
        synth.warmup()
        for text in texts:
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                first = None
                n = 0
                for piece in synth.stream(text, voice, opts):
                    first = first if first is not None else time.perf_counter() - t0
                    n += len(piece)
                total = time.perf_counter() - t0
                rows.append(
                    {
                        "text": text,
                        "audio_s": n / synth.sample_rate,
                        "latency_s": total,
                        "ttfa_s": first,
                        "rtf": total / max(n / synth.sample_rate, 1e-9),
                    }
                )
    for r in rows:
        print(
            f"{r['audio_s']:6.2f} s audio  latency {r['latency_s']:6.2f} s  TTFA {r['ttfa_s']:6.2f} s  RTF {r['rtf']:.3f}  {r['text'][:40]}"
        )
    if args.json_out:
        args.json_out.write_text(json.dumps(rows, indent=2, ensure_ascii=False))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from f5rt.server import serve

    return serve(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="f5rt", description="F5-TTS runtime (ONNX Runtime / TensorRT, no torch)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("synth", help="synthesize one text to a WAV file")
    _add_engine(p)
    _add_voice(p)
    p.add_argument("--text")
    p.add_argument("--text-file", type=Path)
    p.add_argument("--out", type=Path, required=True)
    _add_sampling(p)
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("info", help="what an artifacts folder holds, and which backends work here")
    p.add_argument("--artifacts", required=True, type=Path)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("bench", help="latency, time to first audio and RTF on a few texts")
    _add_engine(p)
    _add_voice(p)
    p.add_argument("--text", action="append", help="text to time (repeatable; default: three built-in lines)")
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--json-out", type=Path)
    _add_sampling(p)
    p.set_defaults(func=cmd_bench)

    try:
        from f5rt.server import add_arguments as add_serve_arguments
    except ImportError:  # pragma: no cover - server module always ships; its web deps are optional
        add_serve_arguments = None
    p = sub.add_parser("serve", help="HTTP server: /api/tts, /v1/audio/speech, voices, metrics")
    _add_engine(p)
    if add_serve_arguments is not None:
        add_serve_arguments(p)
    p.set_defaults(func=cmd_serve)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (F5RTError, ValueError, OSError) as e:
        print(f"f5rt {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
