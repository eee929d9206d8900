"""The bench's measuring processes: one fresh interpreter per (side, repeat), launched by f5build.bench.

Why a process of its own each time, and why VmHWM: peak memory must be the side's own. A process
that loaded or exported a model before would carry that high-water mark, and `ru_maxrss` survives
exec on Linux (a fork+exec child reports its parent's peak when the parent's was higher: the first
bench reported the export's 6.2 GB for both sides). `VmHWM` in /proc/self/status belongs to the
address space, which exec replaces, so it starts from nothing in every worker. Nothing is imported
here at module level beyond the standard library, so the reading covers only what the side loads.

    python -m f5build.bench_workers SIDE SPEC_JSON    # prints one JSON line (the last line of stdout)

SIDE is `torch` (f5-tts' own inference), `f5rt` (ONNX Runtime at spec["precision"]) or `idle`
(the interpreter alone: the floor every reading includes, reported beside them); `step-torch` and
`step-f5rt` time one sampling step alone at spec["frames"] frames (both CFG branches: f5-tts' DiT
forward with `cfg_infer=True`, B = 2 inside; f5rt's step graph, which batches them itself), the
unit the thread table is measured on. spec["threads"] and spec["spinning"] ("on"/"off", f5rt only)
say how the side uses the CPU.

    python -m f5build.bench_workers busy PARENT_PID   # keep one core busy until PARENT_PID exits
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

    from f5rt.backends.onnxruntime import OnnxRuntimeBackend, ThreadPolicy
    from f5rt.manifest import load_manifest
    from f5rt.synthesizer import SynthesisOptions, Synthesizer
    from f5rt.voices import Voice

    t0 = time.perf_counter()
    policy = ThreadPolicy(spec["threads"], spinning=spec.get("spinning", "off") == "on")
    backend = OnnxRuntimeBackend(load_manifest(spec["artifacts"]), precision=spec["precision"], threads=policy)
    synth_ = Synthesizer(spec["artifacts"], backend=backend)
    load_s = time.perf_counter() - t0
    ref = reference_audio()
    voice = Voice("bench", REF_TEXT + " ", ref, float(np.sqrt(np.mean(ref.astype(np.float64) ** 2))), "")

    def synth(text: str, gen_s: float, nfe: int) -> Any:
        opts = SynthesisOptions(nfe=nfe, seed=0, fix_duration=REF_SECONDS + gen_s)
        return synth_.synthesize(text, voice, opts).audio

    return synth, load_s


def _step_torch(spec: dict[str, Any]) -> tuple[Callable[[], Any], float]:
    """f5-tts' DiT, one sampling step as its CFM sampler runs it (cond + uncond packed, B = 2)."""
    import torch

    torch.set_num_threads(spec["threads"])
    from f5build.load import load_model

    t0 = time.perf_counter()
    dit = load_model(spec["model"], seed=spec["seed"]).dit
    load_s = time.perf_counter() - t0
    n = int(spec["frames"])
    gen = torch.Generator().manual_seed(0)
    x, cond = torch.randn(1, n, 100, generator=gen), torch.randn(1, n, 100, generator=gen)
    text = torch.randint(1, 200, (1, n // 3), generator=gen)
    t = torch.tensor(0.5)

    def step() -> Any:
        with torch.inference_mode():
            return dit(x=x, cond=cond, text=text, time=t, mask=None, cfg_infer=True, cache=False)

    return step, load_s


def _step_f5rt(spec: dict[str, Any]) -> tuple[Callable[[], Any], float]:
    """f5rt's step graph at spec["precision"] in one ONNX Runtime session under the spec's policy."""
    import numpy as np
    import onnxruntime as ort

    from f5rt.backends.onnxruntime import ThreadPolicy
    from f5rt.manifest import load_manifest

    policy = ThreadPolicy(spec["threads"], spinning=spec.get("spinning", "off") == "on")
    t0 = time.perf_counter()
    path = load_manifest(spec["artifacts"]).find("step", spec["precision"])
    sess = ort.InferenceSession(str(path), policy.session_options(ort), providers=["CPUExecutionProvider"])
    load_s = time.perf_counter() - t0
    n, rng = int(spec["frames"]), np.random.default_rng(0)
    feed: dict[str, Any] = {}
    for i in sess.get_inputs():  # batch 1, `n` frames on every dynamic axis after the batch
        shape = [d if isinstance(d, int) else (1 if k == 0 else n) for k, d in enumerate(i.shape)]
        if i.type == "tensor(bool)":
            feed[i.name] = np.ones(shape, dtype=bool)
        elif i.name in ("t", "dt", "cfg"):
            feed[i.name] = np.full(shape, {"t": 0.5, "dt": 1 / 16, "cfg": 2.0}[i.name], dtype=np.float32)
        else:
            feed[i.name] = (rng.standard_normal(shape) * 0.5).astype(np.float32)

    def step() -> Any:
        return sess.run(None, feed)

    return step, load_s


def run_step(side: str, spec: dict[str, Any]) -> dict[str, Any]:
    """Load, one warm-up step, then spec["calls"] timed steps; the median is the reading."""
    import statistics

    step, load_s = {"step-torch": _step_torch, "step-f5rt": _step_f5rt}[side](spec)
    step()
    times = []
    for _ in range(int(spec.get("calls", 3))):
        t0 = time.perf_counter()
        step()
        times.append(round(time.perf_counter() - t0, 4))
    return {
        "load_s": round(load_s, 2),
        "peak_rss_mb": round(vm_hwm_mb(), 1),
        "step_s": statistics.median(times),
        "times_s": times,
    }


def busy_loop(parent: int) -> None:
    """Keep one core busy (a pure-Python loop, as a neighbour's work would) until `parent` is gone,
    so a bench killed without cleanup leaves nothing spinning behind it."""
    import os

    while os.getppid() == parent:
        for _ in range(2_000_000):
            pass


def run_side(side: str, spec: dict[str, Any]) -> dict[str, Any]:
    """Load the side, warm it up, time every text once; peak memory is this process's VmHWM."""
    if side == "idle":
        return {"load_s": 0.0, "peak_rss_mb": round(vm_hwm_mb(), 1), "runs": []}
    if side == "int8-arithmetic":
        from f5build.int8_arithmetic import probe

        return probe().to_dict()
    if side.startswith("step-"):
        return run_step(side, spec)
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


SIDES = ("torch", "f5rt", "idle", "step-torch", "step-f5rt", "int8-arithmetic")

if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "busy":
        busy_loop(int(sys.argv[2]))
        raise SystemExit(0)
    if len(sys.argv) != 3 or sys.argv[1] not in SIDES:
        raise SystemExit(f"usage: python -m f5build.bench_workers {'|'.join(SIDES)} SPEC_JSON (use `nox -s bench`)")
    print(json.dumps(run_side(sys.argv[1], json.loads(sys.argv[2]))))
