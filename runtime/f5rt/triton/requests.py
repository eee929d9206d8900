"""A Triton request's input tensors -> a checked synthesis job, with `f5rt serve`'s own validation.

The Triton models accept the same request as `POST /api/tts` does, only carried in tensors: `text`
and `voice_id` (BYTES), optional `seed` (INT64), `nfe` (INT32) and `speed` (FP32). The tensors are
mapped onto the /api/tts field names (`nfe` -> `nfe_step`) and go through the very functions the
HTTP server uses (`check_fields`, `check_text`, `build_options`, the voice-id rule), then the voice
store; so a bad request gets the message `f5rt serve` gives, and there is one set of rules to keep.

Nothing here imports Triton: the model code hands in `{name: numpy array or None}`, which keeps this
module testable in the main suite without a server.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from f5rt.errors import F5RTError
from f5rt.limits import Limits
from f5rt.server.errors import ApiError, map_error
from f5rt.server.schemas import TTS_SCHEMA, build_options, check_fields, check_text, check_voice_id
from f5rt.synthesizer import SynthesisOptions
from f5rt.voices import Voice, VoiceStore

# Triton input name -> (/api/tts field name, kind); kind says how the single element is read.
INPUTS: dict[str, tuple[str, str]] = {
    "text": ("text", "str"),
    "voice_id": ("voice_id", "str"),
    "seed": ("seed", "int"),
    "nfe": ("nfe_step", "int"),
    "speed": ("speed", "float"),
}
REQUIRED = ("text", "voice_id")


class RequestError(F5RTError):
    """A request the model refuses; `message` is what the client sees (Triton INVALID_ARG)."""


@dataclass(frozen=True)
class Job:
    """One checked request: what the synthesizer needs, and the seed it will use (never random later)."""

    text: str
    voice_id: str
    voice: Voice
    options: SynthesisOptions

    @property
    def schedule_key(self) -> tuple[Any, ...]:
        """Requests share one engine call only when they share the sampling schedule."""
        return (self.options.nfe, self.options.sway, self.options.use_epss)


def _scalar(name: str, array: np.ndarray) -> Any:
    """The one element of a [1] (or batched [1, 1]) input; more is refused, not silently dropped."""
    a = np.asarray(array)
    if a.size != 1:
        raise RequestError(
            f"input {name!r} must hold exactly one element (shape [1, 1] with batching), got shape {list(a.shape)}: "
            "send one text per request; requests that arrive together are batched by the server"
        )
    return a.reshape(-1)[0]


def _decode(name: str, value: Any) -> str:
    if isinstance(value, str):
        return value
    if not isinstance(value, (bytes, np.bytes_)):
        raise RequestError(f"input {name!r} must be BYTES (UTF-8 text), got {type(value).__name__}")
    try:
        return bytes(value).decode("utf-8")
    except UnicodeDecodeError as e:
        raise RequestError(f"input {name!r} is not valid UTF-8 (byte {e.start})") from None


def request_fields(inputs: Mapping[str, np.ndarray | None]) -> dict[str, Any]:
    """Tensors -> the /api/tts JSON body they stand for (Python str/int/float values)."""
    unknown = sorted(k for k in inputs if k not in INPUTS)
    if unknown:
        raise RequestError(f"unknown input(s) {unknown}; accepted: {sorted(INPUTS)}")
    body: dict[str, Any] = {}
    for name, (field, kind) in INPUTS.items():
        array = inputs.get(name)
        if array is None:
            continue
        value = _scalar(name, array)
        if kind == "str":
            body[field] = _decode(name, value)
        elif kind == "int":
            body[field] = int(value)
        else:
            body[field] = float(value)  # NaN/inf stay as they are: check_fields refuses them by name
    return body


def parse_request(
    inputs: Mapping[str, np.ndarray | None], voices: VoiceStore, defaults: SynthesisOptions, limits: Limits
) -> Job:
    """Check one request exactly as `POST /api/tts` would and resolve its voice; RequestError if bad."""
    try:
        body = request_fields(inputs)
        for name in REQUIRED:  # Triton already refuses an absent required input; an explicit check costs nothing
            if INPUTS[name][0] not in body:
                raise ApiError(400, "missing_field", f"field {INPUTS[name][0]!r} is required")
        fields = check_fields(body, TTS_SCHEMA)
        text = check_text(fields["text"], "text", limits.max_text_chars)
        options = build_options(defaults, fields, limits)
        voice_id = check_voice_id(fields["voice_id"])
    except ApiError as e:
        raise RequestError(e.message) from None
    try:
        voice = voices.get(voice_id)
    except F5RTError as e:  # VoiceNotFound, or a stored voice whose audio is unusable
        raise RequestError(str(e)) from None
    return Job(text, voice_id, voice, options)


def error_message(e: BaseException) -> str:
    """What a client is told about a failure during synthesis (the server's own wording)."""
    return str(e) if isinstance(e, RequestError) else map_error(e).message


def triton_code(e: BaseException) -> str:
    """The TritonError code for `e`, from the HTTP status `f5rt serve` gives it.

    4xx: the request's fault (INVALID_ARG); 503/504: capacity, try again (UNAVAILABLE); the rest is
    the server's fault (INTERNAL).
    """
    if isinstance(e, RequestError):
        return "INVALID_ARG"
    status = map_error(e).status
    if status < 500:
        return "INVALID_ARG"
    return "UNAVAILABLE" if status in (503, 504) else "INTERNAL"


__all__ = ["INPUTS", "REQUIRED", "Job", "RequestError", "error_message", "parse_request", "triton_code"]
