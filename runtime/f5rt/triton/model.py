"""The Triton Python-backend models over `f5rt.Synthesizer`: `f5tts` (one response) and `f5tts_stream`.

Each repository model's `model.py` only imports a class from here (the logic is runtime code, tested
and linted with the rest of f5rt). Triton runs every model instance in its own stub process; one
instance owns one Synthesizer (one set of ONNX Runtime sessions, or one TensorRT engine set and its
CUDA graphs on the instance's GPU) and all instances of a model read the same voices folder.

Batching. `f5tts` uses Triton's dynamic batcher where the config has one (GPU instances): requests
that arrive within the queue delay reach one `execute()` call together and run as one
`Synthesizer.synthesize_batch`, whose engine calls group rows by schedule with the same code as
`f5rt serve`'s batcher (f5rt.service.work.group_by_schedule; B > 1 buckets; each request's audio
equals what it would be alone). `f5tts_stream` is decoupled: its `execute()` only starts the
streams, and one f5rt.service Batcher worker per instance advances every open stream one text chunk
at a time, so a long stream never holds a short one behind it and a cancelled stream stops at the
next chunk. docs/triton.md has the measurements behind this choice.

Errors never escape `execute()`: a bad request gets a Triton error with `f5rt serve`'s message
(INVALID_ARG), a failure inside the engines an INTERNAL error, and the other requests of the same
batch still get their audio. `triton_python_backend_utils` exists only inside Triton's stub, so it is
imported in `initialize()`; the few of its objects used here are described by the protocols below.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import threading
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from f5rt.errors import RequestTimeout
from f5rt.service.batcher import Batcher, Slot
from f5rt.service.errors import ServiceError
from f5rt.synthesizer import SynthesisOptions, Synthesizer
from f5rt.triton.params import ModelParams, ParameterError
from f5rt.triton.requests import INPUTS, Job, error_message, parse_request, triton_code
from f5rt.voices import VoiceStore

Response = object
"""A pb_utils.InferenceResponse: made here, handed back to Triton, never read."""


class _Tensor(Protocol):
    def as_numpy(self) -> np.ndarray: ...


class _Sender(Protocol):
    def send(self, response: Response | None = None, flags: int = 0) -> None: ...
    def is_cancelled(self) -> bool: ...


class _Request(Protocol):
    """The part of pb_utils.InferenceRequest the models use."""

    def is_cancelled(self) -> bool: ...
    def get_response_sender(self) -> _Sender: ...


log = logging.getLogger("f5rt.triton")


def _select_gpu(args: dict[str, str]) -> None:
    """Pin a KIND_GPU instance's process to its device before anything touches CUDA.

    Triton says which GPU an instance belongs to (`model_instance_device_id`, an index among the GPUs
    the server sees); the runtime always uses device 0 of its process, so the process is narrowed
    to that one GPU (respecting a CUDA_VISIBLE_DEVICES the server was started with).
    """
    if args.get("model_instance_kind") != "GPU":
        return
    device = int(args.get("model_instance_device_id", "0"))
    visible = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    os.environ["CUDA_VISIBLE_DEVICES"] = visible[device] if device < len(visible) else str(device)


def instance_threads(config: dict[str, Any], kind: str) -> int | None:
    """ONNX Runtime threads of one CPU instance when config.pbtxt leaves `threads` at 0.

    Every instance is a process with its own sessions, and Triton runs them side by side: K CPU
    instances each taking the whole CPU budget would run K x budget threads whenever they are all
    busy. Each gets the budget / K (at least 1; f5rt.backends.onnxruntime.default_threads), spinning
    off as everywhere (ThreadPolicy). None (the runtime's default) for GPU instances.
    """
    if kind != "CPU":
        return None
    from f5rt.backends.onnxruntime import default_threads

    groups = config.get("instance_group") or [{}]
    count = sum(int(g.get("count", 1)) for g in groups if g.get("kind", "KIND_CPU") == "KIND_CPU")
    return default_threads(share=max(1, count))


class _Instance:
    """What both models share: parameters, the synthesizer, the voices and the tensor plumbing."""

    def initialize(self, args: dict[str, str]) -> None:
        import json

        import triton_python_backend_utils as pb_utils  # type: ignore[import-not-found]  # only inside Triton's stub

        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        self.pb: Any = pb_utils  # untyped: it exists only inside Triton's stub
        self.name = args.get("model_instance_name", "f5tts")
        config = json.loads(args["model_config"])
        self.batched = int(config.get("max_batch_size", 0)) > 0
        self.params = ModelParams.from_args(args)
        _select_gpu(args)
        p = self.params
        if not p.voices.is_dir():
            raise ParameterError(f"voices folder {p.voices} does not exist (config parameter 'voices')")
        threads = p.threads or instance_threads(config, args.get("model_instance_kind", ""))
        self.synth = Synthesizer(p.artifacts, backend=p.backend, precision=p.precision, threads=threads)
        self.voices = VoiceStore(p.voices, cache_dir=p.voice_cache)
        self.defaults = SynthesisOptions(nfe=p.default_nfe, cfg=p.default_cfg)
        self.defaults.validate()
        self.sample_rate = int(self.synth.sample_rate)
        self.synth.warmup()  # the model turns READY only once the engines ran: no cold first request
        log.info(
            "%s: %s/%s over %s, voices %s, default nfe %d, cfg %g",
            self.name,
            self.synth.backend_name,
            self.synth.precision,
            p.artifacts,
            p.voices,
            p.default_nfe,
            p.default_cfg,
        )

    # -- tensors --------------------------------------------------------------------------------
    def _inputs(self, request: _Request) -> dict[str, np.ndarray | None]:
        out: dict[str, np.ndarray | None] = {}
        for name in INPUTS:
            tensor: _Tensor | None = self.pb.get_input_tensor_by_name(request, name)
            out[name] = None if tensor is None else tensor.as_numpy()
        return out

    def _parse(self, request: _Request) -> Job:
        return parse_request(self._inputs(request), self.voices, self.defaults, self.params.limits)

    def _audio_response(self, audio: np.ndarray) -> Response:
        wave = np.ascontiguousarray(audio, dtype=np.float32).reshape(-1)
        rate = np.array([self.sample_rate], dtype=np.int32)
        if self.batched:  # every request is one batch row: [1, samples] and [1, 1]
            wave, rate = wave[None, :], rate[None, :]
        response: Response = self.pb.InferenceResponse(
            output_tensors=[self.pb.Tensor("audio", wave), self.pb.Tensor("sample_rate", rate)]
        )
        return response

    def _error(self, e: BaseException, code: str | None = None) -> Response:
        """A Triton error response: INVALID_ARG for the caller's mistakes, UNAVAILABLE when busy, INTERNAL for ours."""
        if code is None:
            code = triton_code(e)
            if code == "INTERNAL":
                log.error("%s: request failed: %s", self.name, e, exc_info=e)
        error_cls = self.pb.TritonError
        value = getattr(error_cls, code, None)
        err = error_cls(error_message(e)) if value is None else error_cls(error_message(e), value)
        response: Response = self.pb.InferenceResponse(error=err)
        return response

    def _close_synth(self) -> None:
        synth = getattr(self, "synth", None)
        if synth is not None:
            synth.close()


class SynthesisModel(_Instance):
    """`f5tts`: one response per request, requests of one dynamic batch synthesized together."""

    def execute(self, requests: Sequence[_Request]) -> list[Response]:
        responses: list[Response | None] = [None] * len(requests)
        jobs: list[tuple[int, Job]] = []
        for i, request in enumerate(requests):
            try:
                if request.is_cancelled():
                    responses[i] = self._error(ServiceError(499, "cancelled", "request cancelled"), "CANCELLED")
                    continue
                jobs.append((i, self._parse(request)))
            except Exception as e:
                responses[i] = self._error(e)
        for i, response in self._run(jobs):
            responses[i] = response
        done = [r for r in responses if r is not None]
        assert len(done) == len(requests), "every request gets exactly one response"
        return done

    def _run(self, jobs: list[tuple[int, Job]]) -> list[tuple[int, Response]]:
        """One synthesize_batch for the whole dynamic batch: its engine calls group rows by schedule."""
        if len(jobs) > 1:
            try:
                results = self.synth.synthesize_batch([(j.text, j.voice, j.options) for _, j in jobs])
                return [(i, self._audio_response(r.audio)) for (i, _), r in zip(jobs, results, strict=True)]
            except Exception:
                # One bad request must not fail its neighbours: run each alone to pin the error on its owner.
                log.warning("%s: batch of %d failed; running its requests one by one", self.name, len(jobs))
        out: list[tuple[int, Response]] = []
        for i, job in jobs:
            try:
                out.append((i, self._audio_response(self.synth.synthesize(job.text, job.voice, job.options).audio)))
            except Exception as e:
                out.append((i, self._error(e)))
        return out

    def finalize(self) -> None:
        self._close_synth()


class StreamingModel(_Instance):
    """`f5tts_stream` (decoupled): one response per audio piece, then an empty final response."""

    def initialize(self, args: dict[str, str]) -> None:
        super().initialize(args)
        self.batcher = Batcher(self.synth.engine, self.params.limits)
        self.batcher.start(warmup=False)  # warmed up above
        self._threads: set[threading.Thread] = set()
        self._lock = threading.Lock()

    def execute(self, requests: Sequence[_Request]) -> None:
        for request in requests:
            sender = request.get_response_sender()
            try:
                job = self._parse(request)
                slot = self.batcher.acquire()  # Overloaded: queue_size streams are already open
            except Exception as e:
                self._finish(sender, self._error(e))
                continue
            thread = threading.Thread(target=self._pump, args=(job, sender, slot), name="f5rt-stream", daemon=True)
            with self._lock:
                self._threads.add(thread)
            thread.start()
        return None

    def _pump(self, job: Job, sender: _Sender, slot: Slot) -> None:
        """Send each piece as the worker makes it; stop the stream's work when the client cancels."""
        timeout = self.params.limits.request_timeout_s
        stream = self.batcher.open_stream(
            job.text, job.voice, job.options, self.params.limits.first_chunk_chars or None
        )
        final: Response | None = None
        try:
            while True:
                if sender.is_cancelled():
                    log.info("%s: stream cancelled by the client; stopping its work", self.name)
                    break
                try:
                    piece = stream.next_piece().result(timeout)
                except concurrent.futures.TimeoutError:  # not the builtin TimeoutError on Python 3.10
                    raise RequestTimeout(f"no audio within the request timeout ({timeout:g} s)") from None
                if piece is None:
                    break
                if len(piece):
                    sender.send(self._audio_response(piece))
        except Exception as e:
            final = self._error(e)
        finally:
            stream.close()
            slot.release()
            self._finish(sender, final)
            with self._lock:
                self._threads.discard(threading.current_thread())

    def _finish(self, sender: _Sender, response: Response | None) -> None:
        """Close the response stream (an error, or the empty final response); never raises."""
        try:
            flag = self.pb.TRITONSERVER_RESPONSE_COMPLETE_FINAL
            if response is None:
                sender.send(flags=flag)
            else:
                sender.send(response, flags=flag)
        except Exception as e:  # the client is gone; nothing is left to tell it
            log.info("%s: could not close a stream: %s", self.name, e)

    def finalize(self) -> None:
        batcher = getattr(self, "batcher", None)
        if batcher is not None:
            batcher.stop()  # queued stream steps fail with ShuttingDown: their pumps send an error and end
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(timeout=10)
        self._close_synth()


__all__ = ["StreamingModel", "SynthesisModel"]
