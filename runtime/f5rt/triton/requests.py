"""A Triton request's input tensors -> a checked job, through the serving core's own checks.

The Triton models accept the request `POST /api/tts` accepts, carried in tensors of the same names:
`text` and `voice_id` (BYTES), optional `seed` (INT64), `nfe_step` (INT32) and `speed` (FP32). The
tensors become the body they stand for, which goes through f5rt.service.requests (`parse_tts`, then
`resolve_voice`) exactly as an HTTP body does; so a bad request gets the message `f5rt serve` gives,
and there is one set of rules to keep. Every refusal is a `ServiceError`; `triton_code` says which
Triton error code its status becomes.

Nothing here imports Triton: the model code hands in `{name: numpy array or None}`, which keeps this
module testable in the main suite without a server.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np

from f5rt.limits import Limits
from f5rt.options import SynthesisOptions
from f5rt.service.errors import ServiceError, map_error
from f5rt.service.requests import TTS_SCHEMA, FieldSpec, parse_tts, resolve_voice
from f5rt.voices import Voice, VoiceStore

INPUTS: Mapping[str, FieldSpec] = {name: TTS_SCHEMA[name] for name in ("text", "voice_id", "seed", "nfe_step", "speed")}
"""Triton input name -> its field of the request schema (the same name: one spelling per transport pair)."""
REQUIRED = ("text", "voice_id")  # no default voice over Triton: a request names its voice
TritonCode = Literal["INVALID_ARG", "UNAVAILABLE", "INTERNAL"]


@dataclass(frozen=True)
class Job:
    """One checked request: what the synthesizer needs, and the seed it will use (never random later)."""

    text: str
    voice_id: str
    voice: Voice
    options: SynthesisOptions


def _refuse(message: str) -> ServiceError:
    return ServiceError(400, "invalid_input", message)


def _scalar(name: str, array: np.ndarray) -> object:
    """The one element of a [1] (or batched [1, 1]) input; more is refused, not silently dropped."""
    a = np.asarray(array)
    if a.size != 1:
        raise _refuse(
            f"input {name!r} must hold exactly one element (shape [1, 1] with batching), got shape {list(a.shape)}: "
            "send one text per request; requests that arrive together are batched by the server"
        )
    value: object = a.reshape(-1)[0]
    return value


def _decode(name: str, value: object) -> str:
    if isinstance(value, str):
        return value
    if not isinstance(value, bytes | np.bytes_):
        raise _refuse(f"input {name!r} must be BYTES (UTF-8 text), got {type(value).__name__}")
    try:
        return bytes(value).decode("utf-8")
    except UnicodeDecodeError as e:
        raise _refuse(f"input {name!r} is not valid UTF-8 (byte {e.start})") from None


def request_fields(inputs: Mapping[str, np.ndarray | None]) -> dict[str, object]:
    """Tensors -> the request body they stand for (Python str/int/float values)."""
    unknown = sorted(k for k in inputs if k not in INPUTS)
    if unknown:
        raise _refuse(f"unknown input(s) {unknown}; accepted: {sorted(INPUTS)}")
    body: dict[str, object] = {}
    for name, spec in INPUTS.items():
        array = inputs.get(name)
        if array is None:
            continue
        value = _scalar(name, array)
        if spec.kind == "str":
            body[name] = _decode(name, value)
        elif spec.kind == "int":
            body[name] = int(value)  # type: ignore[call-overload]  # an INT32/INT64 tensor's numpy scalar
        else:
            body[name] = float(value)  # type: ignore[arg-type]  # NaN/inf stay: the schema refuses them by name
    return body


def parse_request(
    inputs: Mapping[str, np.ndarray | None], voices: VoiceStore, defaults: SynthesisOptions, limits: Limits
) -> Job:
    """Check one request exactly as `POST /api/tts` would and resolve its voice; ServiceError if bad."""
    body = request_fields(inputs)
    for name in REQUIRED:  # Triton already refuses an absent required input; an explicit check costs nothing
        if name not in body:
            raise ServiceError(400, "missing_field", f"field {name!r} is required")
    req = parse_tts(body, defaults, limits)
    voice_id, voice = resolve_voice(voices, req.voice_id)
    return Job(req.text, voice_id, voice, req.options)


def error_message(e: BaseException) -> str:
    """What a client is told about a failure (the serving core's wording, as `f5rt serve` says it)."""
    return map_error(e).message


def triton_code(e: BaseException) -> TritonCode:
    """The TritonError code for `e`, from its status: 4xx the request's fault (INVALID_ARG), 503/504
    capacity, try again (UNAVAILABLE), the rest the server's fault (INTERNAL)."""
    err = map_error(e)
    if err.client_fault:
        return "INVALID_ARG"
    return "UNAVAILABLE" if err.retryable else "INTERNAL"


__all__ = ["INPUTS", "REQUIRED", "Job", "error_message", "parse_request", "request_fields", "triton_code"]
