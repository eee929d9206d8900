"""The synthesizer: text + voice -> waveform, with f5-tts' own sampling recipe on any backend.

Per request: text -> chunks and ids (f5-tts' front-end, exact) -> duration per chunk -> bucket ->
cond mel from the cached voice -> seeded noise -> NFE Euler steps (backend) -> keep the generated
frames -> vocoder -> RMS restore -> cross-fade chunks (-> optional silence trim).

Chunks of one request, and of many requests in `synthesize_batch`, run together in B > 1 buckets;
rows are independent (masked padding, per-row noise and cfg), so a request's audio does not depend
on what it was batched with. Noise is standard normal from numpy's PCG64 seeded with
SeedSequence([seed, chunk_index]); tests inject f5-tts' torch noise through `noise=`.

Two classes. `Synthesizer` is what a user calls: `load`, `synthesize`, `synthesize_batch`, `stream`
(and `voice_from_audio`, `warmup`, `close`). `SynthesisEngine` (`Synthesizer.engine`) is the
planning/running seam a scheduler needs, the `f5rt.service.engine.ChunkEngine` protocol:
`plan_request` (request -> chunk works), `run_chunks` (works -> waves, one engine call per group of
compatible works), `finish` and `joiner` (join the waves). The user calls run both steps in the
calling thread; the server's batcher (f5rt.service.batcher) queues works of many requests as rows.
"""

from __future__ import annotations

import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from f5rt import audio as A
from f5rt import schedules
from f5rt.backends import Backend, SampleJob, make_backend
from f5rt.buckets import Bucket, BucketTable
from f5rt.errors import ManifestError, TextError
from f5rt.manifest import Manifest, VocoderSpec, load_manifest
from f5rt.names import AUTO
from f5rt.options import ScheduleKey, SynthesisOptions
from f5rt.service.work import ChunkWork, RequestPlan, SynthesisResult, Wave, group_by_schedule
from f5rt.text import ChunkPlan, TextFrontend, chunk_text, load_vocab
from f5rt.voices import Voice, prepare_voice, voice_from_bytes

if TYPE_CHECKING:
    from f5rt.backends.onnxruntime import ThreadPolicy

NoiseFn = Callable[[int, int, int, int], np.ndarray]
"""(seed, chunk_index, frames, channels) -> initial noise (frames, channels) float32."""


def default_noise(seed: int, chunk: int, frames: int, channels: int) -> np.ndarray:
    """Standard normal noise from PCG64(SeedSequence([seed, chunk])): reproducible across machines."""
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), int(chunk)])))
    return rng.standard_normal((frames, channels), dtype=np.float32)


class SynthesisEngine:
    """The planning/running half of a Synthesizer (the ChunkEngine protocol). Thread-safe: backend calls are serialised."""

    def __init__(
        self,
        artifacts: str | os.PathLike[str],
        backend: str | Backend = AUTO,
        precision: str = "fp32",
        threads: int | ThreadPolicy | None = None,
        noise: NoiseFn | None = None,
    ) -> None:
        self.manifest: Manifest = load_manifest(artifacts)
        audio_cfg = self.manifest.audio
        self.sample_rate = int(audio_cfg["sample_rate"])
        self.hop = int(audio_cfg["hop_length"])
        self.n_mels = int(audio_cfg["n_mels"])
        if (self.sample_rate, self.hop, self.n_mels) != (A.SAMPLE_RATE, 256, 100):
            raise ValueError(f"unsupported audio config {audio_cfg} (the runtime's mel is 24 kHz, hop 256, 100 mels)")
        self.buckets: BucketTable = self.manifest.buckets
        self.vocoder: VocoderSpec = self.manifest.vocoder  # frames -> samples ((F-1)*hop for "center")
        if self.vocoder.hop_length != self.hop:
            raise ValueError(f"manifest vocoder hop {self.vocoder.hop_length} differs from the mel hop {self.hop}")
        self.frontend = TextFrontend(load_vocab(self.manifest.verify("vocab.txt")), self.hop, self.sample_rate)
        # A backend instance is used as given and stays its owner's to close; a name opens one here,
        # which close() then releases.
        self._owns_backend = isinstance(backend, str)
        self.backend: Backend = (
            make_backend(backend, self.manifest, precision=precision, threads=threads)
            if isinstance(backend, str)
            else backend
        )
        self.backend_name: str = self.backend.name
        self.precision: str = self.backend.precision
        self.noise = noise or default_noise
        self._lock = threading.Lock()

    # -- planning -------------------------------------------------------------------------------
    def _fit(self, voice: Voice, opts: SynthesisOptions, chunks: list[str]) -> list[ChunkPlan]:
        """Plan `chunks`; any chunk longer than the largest bucket is split further, never truncated."""
        plans = self.frontend.plan_chunks(voice.ref_text, voice.samples, chunks, opts.speed, opts.fix_duration)
        out: list[ChunkPlan] = []
        for plan in plans:
            if plan.frames <= self.buckets.max_frames:
                out.append(plan)
                continue
            pieces = _split_text(plan.text)
            if len(pieces) < 2:
                raise TextError(f"a chunk of {plan.frames} frames does not fit the largest bucket and cannot be split")
            out.extend(self._fit(voice, opts, pieces))
        return out

    def plan(
        self, text: str, voice: Voice, opts: SynthesisOptions, first_chunk_chars: int | None = None
    ) -> list[ChunkPlan]:
        """The chunks f5-tts would make (optionally with a short first chunk for streaming)."""
        chunks = [p.text for p in self.frontend.plan(voice.ref_text, voice.samples, text, opts.speed, None)]
        if first_chunk_chars:
            head = chunk_text(text, max(1, int(first_chunk_chars)))
            if len(head) > 1:
                rest = " ".join(head[1:])
                tail = [p.text for p in self.frontend.plan(voice.ref_text, voice.samples, rest, opts.speed, None)]
                chunks = [head[0], *tail]
        return self._fit(voice, opts, chunks)

    def plan_request(
        self,
        text: str,
        voice: Voice,
        options: SynthesisOptions | None = None,
        first_chunk_chars: int | None = None,
        item: int = 0,
    ) -> RequestPlan:
        """Validate and plan one request into chunk works; draws the seed when the options have none.

        This is the planning half of synthesis: a scheduler (f5rt.service.batcher) queues the works as rows,
        runs them with `run_chunks` in whatever groups suit it, and joins the waves with `finish` (whole
        requests) or `joiner` (streams). Rows are independent, so grouping never changes the audio.
        """
        opts = options or SynthesisOptions()
        opts.validate()
        seed = int(opts.seed) if opts.seed is not None else secrets.randbits(63)
        plans = self.plan(text, voice, opts, first_chunk_chars)
        works = tuple(
            ChunkWork(item, i, p, voice, opts, seed, self.buckets.choose(p.frames).frames) for i, p in enumerate(plans)
        )
        return RequestPlan(works, seed, opts)

    @property
    def max_rows(self) -> int:
        """The most rows one engine call takes (the largest batch bucket)."""
        return self.buckets.max_batch

    def padded_rows(self, rows: int) -> int:
        """Rows an engine call of `rows` rows costs: the batch bucket on fixed-shape engines, else `rows`.

        A scheduler may fill the difference with other rows for free (they ride in padding).
        """
        if not self.backend.fixed_shapes:
            return rows
        return self.buckets.choose(1, rows).batch

    # -- running --------------------------------------------------------------------------------
    def run_chunks(self, works: Sequence[ChunkWork], timings: dict[str, float] | None = None) -> list[np.ndarray]:
        """Sample and vocode every work, batching compatible ones; returns one waveform per work, in order.

        This is the run half of synthesis: works of one schedule key and at most `max_rows` of them
        make exactly one engine call. Engine time is added to `timings` (text, sample, vocode).
        """
        timings = {} if timings is None else timings
        waves: list[Wave | None] = [None] * len(works)
        for key, idxs in group_by_schedule(works).items():
            t, dt = schedules.solver_steps(*key)
            for size in self.buckets.split_batch(len(idxs)):
                batch, idxs = idxs[:size], idxs[size:]
                rows = [works[i] for i in batch]
                for i, wave in zip(batch, self._run_batch(rows, t, dt, key.solver, timings), strict=True):
                    waves[i] = wave
        return [w for w in waves if w is not None]

    def _run_batch(
        self, works: list[ChunkWork], t: np.ndarray, dt: np.ndarray, solver: str, timings: dict[str, float]
    ) -> list[np.ndarray]:
        longest = max(w.plan.frames for w in works)
        bucket = self.buckets.choose(longest, len(works))
        if not self.backend.fixed_shapes:
            bucket = Bucket(longest, len(works))  # dynamic-shape backend: no padding work at all
        b, n, c = bucket.batch, bucket.frames, self.n_mels
        ids = np.full((b, n), -1, dtype=np.int32)
        mask = np.zeros((b, n), dtype=bool)
        cond = np.zeros((b, n, c), dtype=np.float32)
        x0 = np.zeros((b, n, c), dtype=np.float32)
        cfg = np.zeros((b,), dtype=np.float32)
        mels = []
        for r, w in enumerate(works):
            frames = w.plan.frames
            tok = w.plan.ids[:frames]
            ids[r, : len(tok)] = tok
            mask[r, :frames] = True
            mel = w.voice.mel(w.opts.target_rms).T  # (ref mel frames, C)
            mels.append(mel)
            cond[r, : min(len(mel), frames)] = mel[:frames]
            x0[r, :frames] = self.noise(w.seed, w.index, frames, c)
            cfg[r] = w.opts.cfg
        for r in range(len(works), b):  # unused rows repeat row 0: finite, and never read back
            ids[r], mask[r], cond[r], x0[r], cfg[r] = ids[0], mask[0], cond[0], x0[0], cfg[0]

        with self._lock:
            t0 = time.perf_counter()
            text = self.backend.encode_text(ids, mask)  # may stay on the device (TensorRT)
            t1 = time.perf_counter()
            job = SampleJob(bucket, x0, cond, text, mask, t, dt, cfg, solver)
            x = self.backend.sample(job)
            t2 = time.perf_counter()
            waves = []
            for r, w in enumerate(works):
                out = x[r, : w.plan.frames].copy()
                m = min(len(mels[r]), w.plan.frames)
                out[:m] = mels[r][:m]  # CFM.sample keeps the reference frames as given
                gen = out[w.plan.ref_frames :].T[None].astype(np.float32)
                wave = self.backend.vocode(np.ascontiguousarray(gen))[0]
                want = self.vocoder.samples(gen.shape[-1])
                if wave.shape != (want,):
                    raise ManifestError(
                        f"{self.backend_name} vocoder returned {wave.shape[-1]} samples for {gen.shape[-1]} frames; "
                        f"the manifest's vocoder ({self.vocoder.padding} padding) gives {want} "
                        f"({self.vocoder.to_dict()['samples']}): rebuild the engines from this export"
                    )
                if w.voice.rms < w.opts.target_rms:
                    wave = wave * np.float32(w.voice.rms / w.opts.target_rms)
                waves.append(wave.astype(np.float32))
            t3 = time.perf_counter()
        for key, value in (("text", t1 - t0), ("sample", t2 - t1), ("vocode", t3 - t2)):
            timings[key] = timings.get(key, 0.0) + value
        return waves

    def finish(self, plan: RequestPlan, waves: Sequence[np.ndarray], timings: dict[str, float]) -> SynthesisResult:
        """Join a whole request's chunk waves (in chunk order) into its result."""
        if len(waves) != len(plan.works):
            raise ValueError(f"finish: {len(waves)} waves for {len(plan.works)} chunks")
        audio = A.cross_fade(list(waves), plan.opts.cross_fade, self.sample_rate)
        if plan.opts.remove_silence:
            audio = A.trim_silence(audio, self.sample_rate)
        return SynthesisResult(audio.astype(np.float32), self.sample_rate, plan.seed, plan.chunks, dict(timings))

    def joiner(self, opts: SynthesisOptions) -> A.CrossFader:
        """The incremental cross-fade a stream pushes its chunk waves through (equals `finish`'s join)."""
        return A.CrossFader(opts.cross_fade, self.sample_rate)

    def warmup(self) -> None:
        """One short synthesis on a synthetic voice: loads sessions and kernels before traffic."""
        rng = np.random.Generator(np.random.PCG64(0))
        ref = (0.1 * rng.standard_normal(self.sample_rate)).astype(np.float32)
        voice = prepare_voice("warmup", ref, self.sample_rate, "warm up.")
        plan = self.plan_request("Hello.", voice, SynthesisOptions(nfe=2, seed=0))
        self.run_chunks(plan.works)

    def close(self) -> None:
        """Release the backend this engine opened (one passed in is left to its owner)."""
        if self._owns_backend:
            self.backend.close()


class Synthesizer:
    """F5-TTS inference over one artifacts folder: what a user calls. Thread-safe.

    `Synthesizer.load(artifacts)` (or the constructor, same arguments) opens the backend; then
    `synthesize` (one request), `synthesize_batch` (several, batched; each result equals its request
    alone), `stream` (audio pieces as chunks finish). `engine` is the planning/running seam a
    scheduler uses (f5rt.service.engine.ChunkEngine); `manifest`, `buckets`, `backend`,
    `backend_name`, `precision` and `sample_rate` describe what was loaded.
    """

    def __init__(
        self,
        artifacts: str | os.PathLike[str],
        backend: str | Backend = AUTO,
        precision: str = "fp32",
        threads: int | ThreadPolicy | None = None,
        noise: NoiseFn | None = None,
    ) -> None:
        self.engine = SynthesisEngine(artifacts, backend, precision, threads, noise)
        self.manifest: Manifest = self.engine.manifest
        self.buckets: BucketTable = self.engine.buckets
        self.backend: Backend = self.engine.backend
        self.backend_name: str = self.engine.backend_name
        self.precision: str = self.engine.precision
        self.sample_rate: int = self.engine.sample_rate

    @classmethod
    def load(
        cls,
        artifacts: str | os.PathLike[str],
        *,
        backend: str | Backend = AUTO,
        precision: str = AUTO,
        threads: int | ThreadPolicy | None = None,
    ) -> Synthesizer:
        """Open an artifacts folder as `f5rt synth` does: backend and precision `auto` by default."""
        return cls(artifacts, backend=backend, precision=precision, threads=threads)

    def voice_from_audio(
        self,
        audio: np.ndarray | bytes | str | os.PathLike[str],
        ref_text: str,
        sample_rate: int | None = None,
        voice_id: str = "adhoc",
    ) -> Voice:
        """A voice from samples (with their rate), encoded bytes, or a file path."""
        if isinstance(audio, np.ndarray):
            if sample_rate is None:
                raise ValueError("sample_rate is required with raw samples")
            return prepare_voice(voice_id, audio, sample_rate, ref_text)
        data = audio if isinstance(audio, bytes) else Path(audio).read_bytes()
        return voice_from_bytes(voice_id, data, ref_text)

    def synthesize(
        self, text: str, voice: Voice, options: SynthesisOptions | None = None, first_chunk_chars: int | None = None
    ) -> SynthesisResult:
        return self.synthesize_batch([(text, voice, options or SynthesisOptions())], first_chunk_chars)[0]

    def synthesize_batch(
        self, items: Sequence[tuple[str, Voice, SynthesisOptions]], first_chunk_chars: int | None = None
    ) -> list[SynthesisResult]:
        """Run several requests together; each result equals synthesize() of that request alone."""
        t0 = time.perf_counter()
        engine = self.engine
        plans = [
            engine.plan_request(text, voice, opts, first_chunk_chars, i) for i, (text, voice, opts) in enumerate(items)
        ]
        works = [w for p in plans for w in p.works]
        timings: dict[str, float] = {}
        waves = engine.run_chunks(works, timings)
        results = []
        start = 0
        for p in plans:
            results.append(engine.finish(p, waves[start : start + len(p.works)], timings))
            start += len(p.works)
        total = time.perf_counter() - t0
        for r in results:
            r.timings["total"] = total
        return results

    def stream(
        self, text: str, voice: Voice, options: SynthesisOptions | None = None, first_chunk_chars: int | None = 40
    ) -> Iterator[np.ndarray]:
        """Yield audio as chunks finish: the first (short) chunk alone, then the rest batched.

        The concatenation of all pieces equals synthesize(text, voice, options, first_chunk_chars)
        (without remove_silence, which needs the whole waveform). Closing the generator stops the work.
        The server does not use this loop: its batcher schedules the same works as rows (f5rt.service.batcher).
        """
        engine = self.engine
        plan = engine.plan_request(text, voice, options, first_chunk_chars)
        joiner = engine.joiner(plan.opts)
        timings: dict[str, float] = {}
        pending = list(plan.works)
        while pending:
            take = 1 if pending[0].index == 0 else engine.max_rows  # first chunk alone: fast TTFA
            group, pending = pending[:take], pending[take:]
            for wave in engine.run_chunks(group, timings):
                piece = joiner.push(wave)
                if len(piece):
                    yield piece
        tail = joiner.flush()
        if len(tail):
            yield tail

    def warmup(self) -> None:
        """One short synthesis on a synthetic voice: loads sessions and kernels before traffic."""
        self.engine.warmup()

    def close(self) -> None:
        """Release the backend this synthesizer opened (one passed in is left to its owner)."""
        self.engine.close()

    def __enter__(self) -> Synthesizer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _split_text(text: str) -> list[str]:
    """Halve a chunk that is too long for any bucket: at a space if there is one, else mid-text."""
    text = text.strip()
    if len(text) < 2:
        return [text]
    mid = len(text) // 2
    spaces = [i for i, ch in enumerate(text) if ch.isspace()]
    if spaces:
        mid = min(spaces, key=lambda i: abs(i - mid))
    left, right = text[:mid].strip(), text[mid:].strip()
    return [p for p in (left, right) if p]


__all__ = [
    "ChunkWork",
    "NoiseFn",
    "RequestPlan",
    "ScheduleKey",
    "SynthesisEngine",
    "SynthesisOptions",
    "SynthesisResult",
    "Synthesizer",
    "default_noise",
]
