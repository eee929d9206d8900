"""The bench's measuring processes: one fresh interpreter per (side, repeat), launched by f5build.bench.

Why a process of its own each time, and why VmHWM: peak memory must be the side's own. A process
that loaded or exported a model before would carry that high-water mark, and `ru_maxrss` survives
exec on Linux (a fork+exec child reports its parent's peak when the parent's was higher: the first
bench reported the export's 6.2 GB for both sides). `VmHWM` in /proc/self/status belongs to the
address space, which exec replaces, so it starts from nothing in every worker. Nothing is imported
here at module level beyond the standard library, so the reading covers only what the side loads.

    python -m f5build.bench_workers SIDE SPEC_JSON    # prints one JSON line (the last line of stdout)

SIDE is `torch` (f5-tts' own inference), `f5rt` (ONNX Runtime at spec["precision"]) or `idle`
(the interpreter alone: the floor every reading includes, reported beside them).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REF_TEXT = "This is the reference voice, speaking clearly."
REF_SECONDS = 3.0
TEXTS = (  # (generated seconds, text): durations are fixed so every side does identical work
    (2.0, "Thanks for the follow!"),
    (4.0, "欢迎来到直播间，今天我们来聊聊新游戏。"),
    (7.0, "Okay chat, here is the plan for tonight: first the boss fight, then your messages."),
)


def vm_hwm_mb() -> float:
    """This address space's peak resident set (VmHWM), in MB; -1 where /proc is not Linux's."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return -1.0


def reference_audio() -> Any:
    """A 3 s, 24 kHz speech-like reference (harmonic bursts with pauses), the same on every side."""
    import numpy as np

    sr = 24000
    t = np.arange(int(REF_SECONDS * sr)) / sr
    phase = 2 * np.pi * np.cumsum(120 + 30 * np.sin(2 * np.pi * 0.7 * t)) / sr
    x = sum(np.sin(k * phase) / k for k in range(1, 8)) * (np.sin(2 * np.pi * 1.3 * t) > -0.3)
    return (x / np.sqrt(np.mean(x**2)) * 0.08).astype(np.float32)


def _torch_side(spec: dict[str, Any]) -> tuple[Callable[[str, float, int], Any], float]:
    import numpy as np
    import torch

    torch.set_num_threads(spec["threads"])
    from f5_tts.infer.utils_infer import infer_batch_process

    from f5build.load import f5_reference_sampler, load_model

    t0 = time.perf_counter()
    bundle = load_model(spec["model"], seed=spec["seed"])
    model = f5_reference_sampler(bundle, Path(spec["artifacts"]) / "vocab.txt")
    load_s = time.perf_counter() - t0
    wave = torch.from_numpy(reference_audio())[None]

    def synth(text: str, gen_s: float, nfe: int) -> Any:
        out, _, _ = next(
            infer_batch_process(
                (wave, 24000),
                REF_TEXT + " ",
                [text],
                model,
                bundle.vocos,
                nfe_step=nfe,
                cfg_strength=2.0,
                sway_sampling_coef=-1.0,
                fix_duration=REF_SECONDS + gen_s,
                device="cpu",
                progress=None,
            )
        )
        return np.asarray(out)

    return synth, load_s


def _f5rt_side(spec: dict[str, Any]) -> tuple[Callable[[str, float, int], Any], float]:
    import numpy as np

    from f5rt.backends.onnxruntime import OnnxRuntimeBackend
    from f5rt.manifest import load_manifest
    from f5rt.synthesizer import SynthesisOptions, Synthesizer
    from f5rt.voices import Voice

    t0 = time.perf_counter()
    backend = OnnxRuntimeBackend(load_manifest(spec["artifacts"]), precision=spec["precision"], threads=spec["threads"])
    synth_ = Synthesizer(spec["artifacts"], backend=backend)
    load_s = time.perf_counter() - t0
    ref = reference_audio()
    voice = Voice("bench", REF_TEXT + " ", ref, float(np.sqrt(np.mean(ref.astype(np.float64) ** 2))), "")

    def synth(text: str, gen_s: float, nfe: int) -> Any:
        opts = SynthesisOptions(nfe=nfe, seed=0, fix_duration=REF_SECONDS + gen_s)
        return synth_.synthesize(text, voice, opts).audio

    return synth, load_s


def run_side(side: str, spec: dict[str, Any]) -> dict[str, Any]:
    """Load the side, warm it up, time every text once; peak memory is this process's VmHWM."""
    if side == "idle":
        return {"load_s": 0.0, "peak_rss_mb": round(vm_hwm_mb(), 1), "runs": []}
    make = {"torch": _torch_side, "f5rt": _f5rt_side}[side]
    synth, load_s = make(spec)
    synth(TEXTS[0][1], 0.5, 2)  # warm-up: first-call allocations are not the steady state
    runs = []
    for gen_s, text in TEXTS:
        t0 = time.perf_counter()
        audio = synth(text, gen_s, spec["nfe"])
        latency = time.perf_counter() - t0
        seconds = len(audio) / 24000
        runs.append({"target_s": gen_s, "audio_s": round(seconds, 3), "latency_s": round(latency, 3)})
    out = {"load_s": round(load_s, 2), "peak_rss_mb": round(vm_hwm_mb(), 1), "runs": runs}
    out["imports_torch"] = "torch" in sys.modules
    return out


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("torch", "f5rt", "idle"):
        raise SystemExit("usage: python -m f5build.bench_workers torch|f5rt|idle SPEC_JSON (use `nox -s bench`)")
    print(json.dumps(run_side(sys.argv[1], json.loads(sys.argv[2]))))
