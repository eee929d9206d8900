"""ONNX Runtime backend: the ONNX graphs of the build, on any CPU.

The NFE loop runs in Python, one step-graph call per step. Besides the graphs the TensorRT engines
are built from, the build makes ONNX Runtime-only step graphs (f5rt.precision): `cpu-fp32`, attention
fused into com.microsoft.MultiHeadAttention, and `cpu-int8`, which adds dynamic INT8 MatMuls. How
the sessions use the CPU is a `ThreadPolicy` (see there for the measurements behind the defaults).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from f5rt.backends.base import HostText, SampleJob
from f5rt.errors import BackendUnavailable, ManifestError
from f5rt.manifest import Manifest
from f5rt.names import GRAPHS
from f5rt.precision import resolve


@dataclass(frozen=True)
class CpuBudget:
    """The CPUs this process may really use: its affinity mask and its cgroup's CPU quota.

    `os.cpu_count()` (ONNX Runtime's own default) counts the machine; a container limited with
    `--cpus 2` (a cgroup quota) or a `taskset` still sees every core there, and threads beyond the
    budget only queue behind each other (with a quota, they are throttled together at each period).
    """

    affinity: int  # CPUs in the affinity mask
    quota: float | None  # cgroup CPU quota in CPUs (cpu.max / cfs_quota_us), None: unlimited

    @property
    def cpus(self) -> int:
        """Whole CPUs to plan threads for: the affinity count, capped by the quota rounded up (a
        quota of 1.5 still lets two threads run 75 % of each period, more work than one thread)."""
        if self.quota is None:
            return self.affinity
        return max(1, min(self.affinity, math.ceil(self.quota - 1e-9)))


def _cgroup_quota(root: Path = Path("/sys/fs/cgroup"), proc_cgroup: Path = Path("/proc/self/cgroup")) -> float | None:
    """The CPU quota (in CPUs) of this process's cgroup and its ancestors, smallest wins; None if none."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None
    quotas: list[float] = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        rel = path.lstrip("/")
        if controllers == "":  # cgroup v2: cpu.max = "<quota|max> <period>" in this group and above
            base = root
            candidates = [base / rel] + [base / Path(rel).parents[i] for i in range(len(Path(rel).parents))]
            for d in candidates:
                try:
                    quota, period = (d / "cpu.max").read_text().split()[:2]
                except (OSError, ValueError):
                    continue
                if quota != "max" and float(period) > 0:
                    quotas.append(float(quota) / float(period))
        elif "cpu" in controllers.split(","):  # cgroup v1
            for d in (root / controllers / rel, root / controllers, root / "cpu" / rel, root / "cpu"):
                try:
                    quota_us = float((d / "cpu.cfs_quota_us").read_text())
                    period_us = float((d / "cpu.cfs_period_us").read_text())
                except (OSError, ValueError):
                    continue
                if quota_us > 0 and period_us > 0:
                    quotas.append(quota_us / period_us)
                break
    return min(quotas) if quotas else None


def cpu_budget() -> CpuBudget:
    """This process's CPU budget (affinity mask and cgroup quota)."""
    try:
        affinity = max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        affinity = max(1, os.cpu_count() or 1)
    return CpuBudget(affinity, _cgroup_quota())


def default_threads(share: int = 1) -> int:
    """Intra-op threads by default: the CPU budget (affinity, cgroup quota), split between `share`
    engines that run side by side on it (Triton CPU instances), at least 1."""
    return max(1, cpu_budget().cpus // max(1, int(share)))


SPIN_ENV = "F5RT_ORT_SPINNING"  # "1"/"0": overrides the spinning default where no flag reaches (Triton)


@dataclass(frozen=True)
class ThreadPolicy:
    """How the ONNX Runtime sessions use the CPU: intra-op threads, spinning, inter-op threads.

    The defaults (`ThreadPolicy.default()`) and the measurements behind them are in
    docs/benchmarks-cpu.md; in short:

    - spinning off (`session.intra_op.allow_spinning = 0`): ONNX Runtime's workers otherwise spin
      between the DiT's many parallel sections, and on a core shared with anything else (a neighbour,
      another engine, `serve`'s event loop streaming audio) they take the slices the other thread
      needed. On an AVX2 EPYC with one of two cores busy (cpu-int8 step, N = 600) two spinning
      threads were the slowest choice (5.4-5.9 s; one thread 4.6-4.8 s, two without spinning
      4.9-5.2 s); on an oversubscribed box, two non-spinning threads beat two spinning ones in every
      row of the bench's thread table. Quiet, spinning saves only a wake-up per parallel section.
    - threads = the CPU budget (affinity mask, cgroup quota): a quiet machine runs two threads much
      faster than one, and with a core taken two non-spinning threads lose only a few percent to one
      thread; the process cannot know whether a neighbour will stay, so it plans for what it may use.
    - inter-op 1 (sequential execution): the graphs are one chain of large ops; a second pool would
      only compete with the intra-op one for the same cores.

    Users who own their cores can ask for spinning (`--ort-spinning on`) and any thread count.
    """

    intra_op: int
    spinning: bool = False
    inter_op: int = 1

    def __post_init__(self) -> None:
        if self.intra_op < 1 or self.inter_op < 1:
            raise ValueError(f"threads must be >= 1, got intra-op {self.intra_op} and inter-op {self.inter_op}")

    @classmethod
    def default(cls, threads: int | None = None, spinning: bool | None = None, share: int = 1) -> ThreadPolicy:
        """The policy for `threads` (None: the CPU budget / `share`) and `spinning` (None: off, or
        F5RT_ORT_SPINNING=1)."""
        if spinning is None:
            env = os.environ.get(SPIN_ENV, "").strip().lower()
            if env not in ("", "0", "1", "on", "off", "true", "false"):
                raise ValueError(f"{SPIN_ENV}={env!r}: use 1 (spin) or 0 (do not)")
            spinning = env in ("1", "on", "true")
        if threads is not None and int(threads) < 1:
            raise ValueError(f"threads must be >= 1, got {threads} (leave it out for the CPU budget)")
        return cls(int(threads) if threads else default_threads(share), bool(spinning))

    def session_options(self, ort: Any) -> Any:
        """An `onnxruntime.SessionOptions` carrying this policy (and the backend's fixed settings)."""
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = self.intra_op
        opts.inter_op_num_threads = self.inter_op
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL if self.inter_op == 1 else ort.ExecutionMode.ORT_PARALLEL
        spin = "1" if self.spinning else "0"
        opts.add_session_config_entry("session.intra_op.allow_spinning", spin)
        opts.add_session_config_entry("session.inter_op.allow_spinning", spin)
        return opts

    def describe(self) -> str:
        return f"{self.intra_op} thread(s), spinning {'on' if self.spinning else 'off'}, inter-op {self.inter_op}"


def thread_setting(threads: int | None, spinning: str | None) -> int | ThreadPolicy | None:
    """What `--threads` and `--ort-spinning on|off` ask of the backend (None: ThreadPolicy.default)."""
    if spinning is None:
        return threads
    if spinning not in ("on", "off"):
        raise ValueError(f"--ort-spinning takes on or off, got {spinning!r}")
    return ThreadPolicy.default(threads, spinning=spinning == "on")


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
        self,
        manifest: Manifest,
        precision: str = "fp32",
        threads: int | ThreadPolicy | None = None,
        *,
        pad_to_buckets: bool = False,
    ) -> None:
        self.fixed_shapes = bool(pad_to_buckets)
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise BackendUnavailable("onnxruntime is not installed (pip install 'f5rt[onnxruntime]')") from e
        precision = resolve(manifest, "onnxruntime", precision)
        self.precision = precision
        self.policy = threads if isinstance(threads, ThreadPolicy) else ThreadPolicy.default(threads)
        self.threads = self.policy.intra_op
        opts = self.policy.session_options(ort)
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

        self._text, self._step, self._vocoder = (session(g) for g in GRAPHS)
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

        def step(x_in: np.ndarray, t: float, dt: float) -> np.ndarray:
            feed["x"] = x_in
            feed["t"] = np.full((b,), t, dtype=np.float32)
            feed["dt"] = np.full((b,), dt, dtype=np.float32)
            (out,) = self._step.run(None, feed)
            return np.asarray(out)

        for t, dt in zip(job.t, job.dt, strict=True):
            if job.solver == "midpoint":
                # The graph returns x_in + dt * v(x_in, t). Half step to the midpoint, then the full
                # step's increment dt * v(x_mid, t + dt/2) is step(x_mid, t + dt/2, dt) - x_mid.
                half = np.float32(dt) * np.float32(0.5)
                x_mid = step(x, t, half)
                x = x + (step(x_mid, np.float32(t) + half, dt) - x_mid)
            else:
                x = step(x, t, dt)
        return x

    def vocode(self, mel: np.ndarray) -> np.ndarray:
        (audio,) = self._vocoder.run(None, {"mel": mel.astype(np.float32, copy=False)})
        return audio

    def close(self) -> None:
        self._text = self._step = self._vocoder = None
