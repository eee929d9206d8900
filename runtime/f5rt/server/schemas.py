"""Request schemas and strict JSON: what a body may hold, checked before anything else sees it.

Every request body is parsed by hand, strictly: the service faces the network, and a lenient parser
is where odd inputs (duplicate keys, NaN, lone surrogates, control characters) slip past checks.
Sampling options are then checked against the service's `Limits`, whose ranges sit inside the
engine's own bounds (f5rt.limits.ENGINE_BOUNDS), so what passes here is what the engine can run.
"""

from __future__ import annotations

import json
import math
import secrets
import unicodedata
from dataclasses import dataclass
from typing import Any

from f5rt.limits import ENGINE_BOUNDS, Bound, Limits
from f5rt.server.errors import ApiError
from f5rt.voices import VOICE_ID

MAX_SEED = int(ENGINE_BOUNDS["seed"].hi)
# Characters a chat message may legitimately contain among the C0/C1 controls.
_ALLOWED_CONTROLS = frozenset("\n\r\t")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise ApiError(400, "duplicate_key", f"duplicate JSON key {key!r}")
        obj[key] = value
    return obj


def _no_constants(name: str) -> Any:
    raise ApiError(400, "non_finite_number", f"{name} is not a valid JSON number")


def parse_json_object(raw: bytes) -> dict[str, Any]:
    """Decode a request body: UTF-8 only, one JSON object, no duplicate keys, no NaN/Infinity."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ApiError(400, "invalid_utf8", f"request body is not valid UTF-8 (byte {e.start})") from None
    if text.startswith("\ufeff"):
        raise ApiError(400, "invalid_json", "request body starts with a byte-order mark")
    try:
        obj = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constants)
    except ApiError:
        raise
    except RecursionError:
        raise ApiError(400, "invalid_json", "JSON nested too deeply") from None
    except ValueError as e:  # JSONDecodeError, and int() refusing a huge number
        raise ApiError(400, "invalid_json", f"invalid JSON: {e}") from None
    if not isinstance(obj, dict):
        raise ApiError(400, "not_an_object", f"JSON body must be an object, got {type(obj).__name__}")
    return obj


@dataclass(frozen=True)
class FieldSpec:
    """One accepted body field. kind: str | int | float | bool.

    required: the key must be present; nullable: JSON null is accepted and means "the default"
    (both together: the key must be there, but may say null, like OpenAI's `voice` here).
    """

    kind: str
    required: bool = False
    nullable: bool = False


def check_fields(body: dict[str, Any], schema: dict[str, FieldSpec]) -> dict[str, Any]:
    """Unknown fields, missing required fields and wrong JSON types are refused; returns present fields."""
    unknown = sorted(set(body) - set(schema))
    if unknown:
        raise ApiError(400, "unknown_field", f"unknown field(s) {unknown}; accepted: {sorted(schema)}")
    out: dict[str, Any] = {}
    for name, spec in schema.items():
        if name not in body:
            if spec.required:
                raise ApiError(400, "missing_field", f"field {name!r} is required")
            continue
        value = body[name]
        if value is None:
            if not spec.nullable:
                raise ApiError(400, "invalid_type", f"field {name!r} may not be null")
            out[name] = None
            continue
        if not _is_kind(value, spec.kind):
            raise ApiError(400, "invalid_type", f"field {name!r} must be {spec.kind}, got {_json_type(value)}")
        if spec.kind == "float" and not math.isfinite(value):
            raise ApiError(400, "non_finite_number", f"field {name!r} must be a finite number")
        out[name] = float(value) if spec.kind == "float" else value
    return out


def _is_kind(value: Any, kind: str) -> bool:
    if isinstance(value, bool):
        return kind == "bool"
    if kind == "int":
        return isinstance(value, int)
    if kind == "float":
        return isinstance(value, int | float)
    if kind == "str":
        return isinstance(value, str)
    if kind == "bool":
        return False
    raise AssertionError(kind)


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    return {int: "integer", float: "number", str: "string", list: "array", dict: "object"}.get(type(value), "?")


def check_text(text: str, field: str, max_chars: int) -> str:
    """Refuse text that is empty, too long, or holds control characters or lone surrogates."""
    if len(text) > max_chars:
        raise ApiError(400, "text_too_long", f"{field!r} has {len(text)} characters; the limit is {max_chars}")
    for i, ch in enumerate(text):
        cat = unicodedata.category(ch)
        if cat == "Cs":
            raise ApiError(400, "invalid_text", f"{field!r} holds a lone surrogate at index {i}")
        if cat == "Cc" and ch not in _ALLOWED_CONTROLS:
            raise ApiError(400, "invalid_text", f"{field!r} holds control character U+{ord(ch):04X} at index {i}")
    if not text.strip():
        raise ApiError(400, "invalid_text", f"{field!r} is empty")
    return text


def check_bound(name: str, value: float, bound: Bound) -> None:
    if not bound.contains(value):
        raise ApiError(400, "out_of_range", f"{name} must be {bound.describe()}, got {value}")


def check_voice_id(voice_id: str) -> str:
    """Voice ids are plain names: they become a folder name, so nothing else may reach the filesystem."""
    if not isinstance(voice_id, str) or not VOICE_ID.fullmatch(voice_id):
        raise ApiError(400, "invalid_voice_id", "voice id must match ^[A-Za-z0-9_-]{1,64}$")
    return voice_id


TTS_SCHEMA = {
    "text": FieldSpec("str", required=True),
    "voice_id": FieldSpec("str", nullable=True),
    "speed": FieldSpec("float"),
    "target_rms": FieldSpec("float"),
    "cross_fade_duration": FieldSpec("float"),
    "sway_sampling_coef": FieldSpec("float", nullable=True),  # null: plain uniform schedule
    "cfg_strength": FieldSpec("float"),
    "nfe_step": FieldSpec("int"),
    "fix_duration": FieldSpec("float", nullable=True),
    "remove_silence": FieldSpec("bool"),
    "seed": FieldSpec("int", nullable=True),  # null or -1: a random seed (returned in the response)
}

# OpenAI requires model, input and voice (a missing one is 400 there too). `voice` may be null here:
# the server's default voice. `model` is any name: clients hard-code tts-1 and the like.
SPEECH_SCHEMA = {
    "model": FieldSpec("str", required=True),
    "input": FieldSpec("str", required=True),
    "voice": FieldSpec("str", required=True, nullable=True),  # a string, or OpenAI's {"id": ...} (handled first)
    "instructions": FieldSpec("str"),  # accepted for client compatibility; F5-TTS has no style prompt
    "response_format": FieldSpec("str"),
    "speed": FieldSpec("float"),
    "stream_format": FieldSpec("str"),
    "seed": FieldSpec("int", nullable=True),  # extension: reproducible output
}

# /api/tts field -> SynthesisOptions field.
_TTS_OPTIONS = {
    "speed": "speed",
    "nfe_step": "nfe",
    "cfg_strength": "cfg",
    "sway_sampling_coef": "sway",
    "target_rms": "target_rms",
    "cross_fade_duration": "cross_fade",
    "fix_duration": "fix_duration",
}


def build_options(defaults: Any, fields: dict[str, Any], limits: Limits) -> Any:
    """SynthesisOptions from /api/tts field names over the server's defaults, checked against the limits."""
    seed = fields.get("seed")
    if seed is None or seed == -1:
        seed = secrets.randbelow(2**31)  # chosen here, not in the synthesizer, so it can be reported
    elif not 0 <= seed <= MAX_SEED:
        raise ApiError(400, "out_of_range", f"seed must be -1 or within [0, {MAX_SEED}], got {seed}")
    bounds = limits.bounds()
    values: dict[str, Any] = {}
    for field, option in _TTS_OPTIONS.items():
        value = fields.get(field, getattr(defaults, option))
        if value is not None:  # null sway: uniform schedule; null fix_duration: estimated
            check_bound(field, value, bounds[option])
        values[option] = value
    options = type(defaults)(
        **values,
        remove_silence=fields.get("remove_silence", defaults.remove_silence),
        seed=seed,
        use_epss=defaults.use_epss,
    )
    try:
        options.validate()  # the engine's own bounds: Limits cannot be looser, so this is belt and braces
    except ValueError as e:
        raise ApiError(400, "out_of_range", str(e)) from None
    return options
