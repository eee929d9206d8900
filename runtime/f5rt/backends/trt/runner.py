"""One bucket's device state and its NFE loop, replayed as one CUDA graph per NFE.

The runner owns an arena (x ping-pong, cond, mask, cfg, per-step t/dt slots, text ids and both text
embeddings) and its pinned host mirror. `step_enqueue(bindings, stream)` enqueues one Euler step
given tensor addresses: on TensorRT it sets the step context's addresses and calls execute_async_v3;
the GPU check drives it with a plain CUDA kernel. With `cuda_graphs`, the NFE enqueues are captured
once per NFE and replayed; if capture fails (an engine TensorRT cannot capture), the runner logs it,
clears CUDA's last error and enqueues step by step from then on.

The text embeddings the text encoder writes stay in the arena: `sample` uploads them only when the
job brings host arrays (`HostText`), not when it brings this runner's `DeviceText` receipt.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence

import numpy as np

from f5rt.backends.base import HostText, SampleJob, TextEmbeddings
from f5rt.backends.trt import cuda
from f5rt.backends.trt.arena import (
    SAMPLE_INPUTS,
    TEXT_EMBEDDINGS,
    ArenaPlan,
    misaligned,
    result_region,
    step_addresses,
    step_bindings,
)
from f5rt.buckets import Bucket

log = logging.getLogger(__name__)

StepEnqueue = Callable[[dict[str, int], cuda.Stream], None]


def _detached(bindings: dict[str, int], stream: cuda.Stream) -> None:
    raise RuntimeError("BucketRunner used after detach()")


class DeviceText(TextEmbeddings):
    """A receipt for text embeddings that live in one runner's arena (generation `generation`).

    `host()` downloads them (tests, calibration); `sample` uses them where they are. A later
    encode_text into the same bucket overwrites them, which makes this receipt stale.
    """

    def __init__(self, runner: BucketRunner, generation: int, batch: int, frames: int) -> None:
        self._runner = runner
        self.generation = generation
        self.shape = (batch, frames)

    @property
    def bucket(self) -> Bucket:
        return self._runner.bucket

    def host(self) -> tuple[np.ndarray, np.ndarray]:
        return self._runner.download_text(self)


class BucketRunner:
    """Arena + pinned mirror + one CUDA graph per NFE for one bucket (see the module docstring)."""

    def __init__(
        self,
        bucket: Bucket,
        plan: ArenaPlan,
        stream: cuda.Stream,
        step_enqueue: StepEnqueue,
        *,
        timer: cuda.StageTimer | None = None,
        cuda_graphs: bool = True,
    ) -> None:
        self.bucket = bucket
        self.plan = plan
        self.nfe_max = plan["t"].shape[0]
        self.cuda_graphs = cuda_graphs
        self.graph_error: str | None = None
        self._stream = stream
        self._enqueue = step_enqueue
        self._timer = timer
        self._graphs: dict[int, cuda.GraphCapture] = {}
        self._text_generation = 0
        self.device = cuda.DeviceBuffer(plan.nbytes)
        try:
            self.host = cuda.PinnedBuffer(plan.nbytes)
            self.device.memset(stream)  # no NaN garbage in padding or unused t/dt slots
        except BaseException:
            self.device.close()
            raise
        self._views: dict[str, np.ndarray] = {r.name: self.host.view(r.dtype, r.shape, r.offset) for r in plan.regions}

    def view(self, name: str) -> np.ndarray:
        return self._views[name]

    def address(self, name: str) -> int:
        return self.device.ptr + self.plan[name].offset

    def upload(self, names: Sequence[str]) -> None:
        for off, n in self.plan.spans(names):
            self.device.upload(self.host, self._stream, off, n)

    def download(self, names: Sequence[str]) -> None:
        for off, n in self.plan.spans(names):
            self.device.download(self.host, self._stream, off, n)

    def stage(self, name: str) -> contextlib.AbstractContextManager[None]:
        return self._timer.stage(name, self._stream) if self._timer is not None else contextlib.nullcontext()

    # -- text embeddings ------------------------------------------------------------------------

    def text_written(self, batch: int, frames: int) -> DeviceText:
        """Record that the text encoder just wrote this arena's embeddings; return their receipt."""
        self._text_generation += 1
        return DeviceText(self, self._text_generation, batch, frames)

    def _check_receipt(self, text: DeviceText) -> None:
        if text._runner is not self or text.generation != self._text_generation:
            raise ValueError(
                f"stale text embeddings for bucket {self.bucket.name}: encode_text ran again since "
                "(encode and sample one batch at a time)"
            )

    def download_text(self, text: DeviceText) -> tuple[np.ndarray, np.ndarray]:
        self._check_receipt(text)
        self.download(TEXT_EMBEDDINGS)
        self._stream.synchronize()
        b, n = text.shape
        return self._views["text_cond"][:b, :n].copy(), self._views["text_uncond"][:b, :n].copy()

    # -- the NFE loop ---------------------------------------------------------------------------

    def step_bindings(self, nfe: int) -> list[dict[str, int]]:
        """Tensor addresses of each of the `nfe` steps, every one checked for TensorRT's alignment."""
        base = self.device.ptr
        out = []
        for step in step_addresses(self.plan, base, nfe):
            bindings = step_bindings(self.plan, base, step)
            bad = misaligned(bindings, self.plan.align)
            if bad:
                raise RuntimeError(f"bucket {self.bucket.name} step {step.step}: misaligned tensor addresses {bad}")
            out.append(bindings)
        return out

    def enqueue_steps(self, nfe: int) -> None:
        """The NFE step enqueues, in order (what a graph captures, or eager mode runs)."""
        for bindings in self.step_bindings(nfe):
            self._enqueue(bindings, self._stream)

    def prepare(self, nfe: int) -> None:
        """Capture and instantiate the graph for `nfe` unless it exists (or graphs are off)."""
        if not self.cuda_graphs or nfe in self._graphs:
            return
        if nfe > self.nfe_max:
            raise ValueError(f"nfe {nfe} exceeds nfe_max {self.nfe_max}")
        try:
            graph = cuda.GraphCapture.record(
                self._stream, lambda: self.enqueue_steps(nfe), f"{self.bucket.name} nfe={nfe}"
            )
        except (cuda.CudaError, RuntimeError) as e:
            self.cuda_graphs = False
            self.graph_error = str(e)
            log.warning("bucket %s: CUDA graph capture failed (%s); running steps eagerly", self.bucket.name, e)
            return
        self._graphs[nfe] = graph

    @property
    def captured(self) -> list[int]:
        return sorted(self._graphs)

    def write_job(self, job: SampleJob) -> bool:
        """Fill the pinned mirror with one job (casts to the arena's dtypes); True when its text
        embeddings came from the host and must be uploaded too."""
        if job.bucket != self.bucket:
            raise ValueError(f"job for bucket {job.bucket.name} given to runner {self.bucket.name}")
        if job.nfe > self.nfe_max:
            raise ValueError(f"nfe {job.nfe} exceeds nfe_max {self.nfe_max} the backend was started with")
        arrays = [("x_a", job.x0), ("cond", job.cond)]
        text = job.text
        if isinstance(text, DeviceText):
            self._check_receipt(text)
        elif isinstance(text, HostText):
            arrays += [("text_cond", text.cond), ("text_uncond", text.uncond)]
        else:
            raise TypeError(f"SampleJob.text must be HostText or this backend's DeviceText, got {type(text).__name__}")
        for name, arr in arrays:
            view = self._views[name]
            if arr.shape != view.shape:
                raise ValueError(f"SampleJob {name} has shape {arr.shape}, the engine wants {view.shape}")
            view[...] = arr
        b = self.bucket.batch
        self._views["mask"][...] = job.mask
        self._views["cfg"][...] = job.cfg
        self._views["t"][: job.nfe, :b] = np.asarray(job.t, np.float32)[:, None]
        self._views["dt"][: job.nfe, :b] = np.asarray(job.dt, np.float32)[:, None]
        return isinstance(text, HostText)

    def sample(self, job: SampleJob) -> np.ndarray:
        """x after the whole Euler loop: copies in, one graph launch (or NFE enqueues), copy out."""
        host_text = self.write_job(job)
        nfe = job.nfe
        self.prepare(nfe)
        with self.stage("h2d"):
            self.upload(SAMPLE_INPUTS + TEXT_EMBEDDINGS if host_text else SAMPLE_INPUTS)
        with self.stage("steps"):
            graph = self._graphs.get(nfe)
            if graph is not None:
                graph.launch(self._stream)
            else:
                self.enqueue_steps(nfe)
        result = result_region(nfe)
        with self.stage("d2h"):
            self.download([result])
        self._stream.synchronize()
        out: np.ndarray = self._views[result].copy()
        return out

    def detach(self) -> None:
        """Destroy the graphs and drop the step callback (and what it holds, e.g. a TensorRT context)."""
        graphs, self._graphs = list(self._graphs.values()), {}
        self._enqueue = _detached
        cuda.close_all(graphs)

    def close(self) -> None:
        self._views = {}
        cuda.close_all([*self._graphs.values(), self.host, self.device])
        self._graphs = {}

    def __enter__(self) -> BucketRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
