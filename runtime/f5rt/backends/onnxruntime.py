"""ONNX Runtime backend: the ONNX graphs of the build, on any CPU.

The NFE loop runs in Python, one step-graph call per step. Besides the graphs the TensorRT engines
are built from, the build makes ONNX Runtime-only step graphs (f5rt.precision): `cpu-fp32`, attention
fused into com.microsoft.MultiHeadAttention, and `cpu-int8`, which adds dynamic INT8 MatMuls. `threads` sets intra-op parallelism; by default one thread per CPU
this process may run on (its affinity mask, so a container or `taskset` limit is respected, where
ONNX Runtime's own default counts the machine's cores). Inter-op parallelism is 1: the graphs are
one chain of large ops, and a second pool only competes with the first for the same cores.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from f5rt.backends.base import HostText, SampleJob
from f5rt.errors import BackendUnavailable, ManifestError
from f5rt.manifest import Manifest
from f5rt.precision import AUTO, cpu_auto


def default_threads() -> int:
    """CPUs this process may run on (its affinity mask), at least 1."""
    import os

    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


class OnnxRuntimeBackend:
    """The Backend protocol on ONNX Runtime (CPU).

    The ONNX graphs have dynamic batch and frame axes, and padding never changes a row's output, so
    requests run at their exact size: a bucket's padded tail would be pure wasted CPU time.
    `pad_to_buckets=True` runs them padded like the engines do, so the TensorRT backend (or its
    emulation) can be compared with this one on identical shapes.

    A step graph whose attention is `unmasked` (flash attention: no key mask) is exact only for rows
    without padded frames; a batch with padding runs row by row at each row's own length (padded
    frames keep their initial noise: nothing reads them). A graph whose rows are not independent
    (`rows_independent: false` in the manifest: dynamic INT8's per-call activation scales) always
    runs row by row, so a row's audio never depends on what it was batched with.
    """

    name = "onnxruntime"

    def __init__(
        self, manifest: Manifest, precision: str = "fp32", threads: int | None = None, *, pad_to_buckets: bool = False
    ) -> None:
        self.fixed_shapes = bool(pad_to_buckets)
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise BackendUnavailable("onnxruntime is not installed (pip install 'f5rt[onnxruntime]')") from e
        if precision == AUTO:
            precision = cpu_auto(manifest)
        self.precision = precision
        self.threads = int(threads) if threads else default_threads()
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        providers = ["CPUExecutionProvider"]
        self.graphs: dict[str, str] = {}  # graph -> precision of the file it runs

        def session(graph: str) -> Any:
            # The text encoder and vocoder fall back to FP32 when a precision has no variant of them.
            want = precision
            prec = want if want in manifest.precisions(graph) else "fp32"
            if graph == "step" and prec != want:
                raise ManifestError(
                    f"{manifest.root}: no '{precision}' step graph (have {manifest.precisions('step')}); run `nox -s quantize`"
                )
            self.graphs[graph] = prec
            return ort.InferenceSession(str(manifest.find(graph, prec)), opts, providers=providers)

        self._text = session("text_encoder")
        self._step = session("step")
        self._vocoder = session("vocoder")
        entry = next(
            (
                m
                for m in manifest.files.values()
                if m.get("graph") == "step" and m.get("precision") == self.graphs["step"]
            ),
            {},
        )
        self.unmasked_attention = entry.get("attention") == "unmasked"
        # cpu-int8 scales activations per call (dynamic quantization): batched rows would change
        # each other's audio, so every row runs alone and a request sounds the same however batched
        self.rows_independent = entry.get("rows_independent", True) is not False

    def encode_text(self, text_ids: np.ndarray, mask: np.ndarray) -> HostText:
        cond, uncond = self._text.run(None, {"text_ids": text_ids.astype(np.int32, copy=False), "mask": mask})
        return HostText(cond, uncond)

    def sample(self, job: SampleJob) -> np.ndarray:
        text_cond, text_uncond = job.text.host()
        cfg = job.cfg.astype(np.float32, copy=False)
        if self.rows_independent and (not self.unmasked_attention or job.mask.all()):  # one call, whole batch
            return self._solve(job.x0, job.cond, text_cond, text_uncond, job.mask, cfg, job)
        x = job.x0.copy()
        for r in range(job.mask.shape[0]):
            n = int(job.mask[r].sum())
            if n == 0:
                continue
            if not job.mask[r, :n].all():
                raise ValueError(
                    f"row {r}: the frame mask must be a prefix (valid frames first) for unmasked attention"
                )
            rows = slice(r, r + 1)
            x[rows, :n] = self._solve(
                job.x0[rows, :n], job.cond[rows, :n], text_cond[rows, :n], text_uncond[rows, :n],
                job.mask[rows, :n], cfg[rows], job,
            )  # fmt: skip
        return x

    def _solve(
        self,
        x: np.ndarray,
        cond: np.ndarray,
        text_cond: np.ndarray,
        text_uncond: np.ndarray,
        mask: np.ndarray,
        cfg: np.ndarray,
        job: SampleJob,
    ) -> np.ndarray:
        b = x.shape[0]
        feed = {"cond": cond, "text_cond": text_cond, "text_uncond": text_uncond, "mask": mask, "cfg": cfg}
        for t, dt in zip(job.t, job.dt, strict=True):
            feed["x"] = x
            feed["t"] = np.full((b,), t, dtype=np.float32)
            feed["dt"] = np.full((b,), dt, dtype=np.float32)
            (x,) = self._step.run(None, feed)
        return x

    def vocode(self, mel: np.ndarray) -> np.ndarray:
        (audio,) = self._vocoder.run(None, {"mel": mel.astype(np.float32, copy=False)})
        return audio

    def close(self) -> None:
        self._text = self._step = self._vocoder = None
