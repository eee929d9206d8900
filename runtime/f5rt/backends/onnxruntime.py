"""ONNX Runtime backend: the same ONNX graphs the TensorRT engines are built from, on any CPU.

The NFE loop runs in Python, one step-graph call per step; the inputs that stay fixed during a
request are bound once per call by ORT. `threads` sets intra-op parallelism (0 = ORT's default).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from f5rt.backends.base import HostText, SampleJob
from f5rt.errors import BackendUnavailable, ManifestError
from f5rt.manifest import Manifest


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
        self.precision = precision
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            opts.intra_op_num_threads = int(threads)
            opts.inter_op_num_threads = 1
        providers = ["CPUExecutionProvider"]

        def session(graph: str) -> Any:
            # The text encoder and vocoder fall back to FP32 when a precision has no variant of them.
            prec = precision if precision in manifest.precisions(graph) else "fp32"
            if graph == "step" and prec != precision:
                raise ManifestError(
                    f"{manifest.root}: no '{precision}' step graph (have {manifest.precisions('step')}); run `nox -s quantize`"
                )
            return ort.InferenceSession(str(manifest.find(graph, prec)), opts, providers=providers)

        self._text = session("text_encoder")
        self._step = session("step")
        self._vocoder = session("vocoder")

    def encode_text(self, text_ids: np.ndarray, mask: np.ndarray) -> HostText:
        cond, uncond = self._text.run(None, {"text_ids": text_ids.astype(np.int32, copy=False), "mask": mask})
        return HostText(cond, uncond)

    def sample(self, job: SampleJob) -> np.ndarray:
        b = job.bucket.batch
        text_cond, text_uncond = job.text.host()
        feed = {
            "cond": job.cond,
            "text_cond": text_cond,
            "text_uncond": text_uncond,
            "mask": job.mask,
            "cfg": job.cfg.astype(np.float32, copy=False),
        }
        x = job.x0
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
