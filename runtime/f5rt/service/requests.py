"""Requests: the schema a body must follow, its checks, and the SynthesisOptions and voice it names.

Both transports check a request here, so the same bad request gets the same message over HTTP and
Triton. A body is a JSON object of wire fields (`/api/tts`' names; Triton's input tensors carry the
same names); `check_fields` refuses unknown fields, missing required ones and wrong JSON types,
`check_text` the text, `build_options` puts the values into SynthesisOptions (each wire field names
its option once, in its `FieldSpec`) and checks them against the service's `Limits`, whose ranges
sit inside the engine's own bounds (f5rt.limits.ENGINE_BOUNDS), so what passes here is what the
engine can run. `resolve_voice` turns a voice id into a stored Voice.

Bodies are parsed by hand, strictly: the service faces the network, and a lenient parser is where
odd inputs (duplicate keys, NaN, lone surrogates, control characters) slip past checks.
"""

from __future__ import annotations

import dataclasses
import json
import math
import secrets
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from f5rt.errors import F5RTError
from f5rt.limits import ENGINE_BOUNDS, Bound, Limits
from f5rt.options import SynthesisOptions
from f5rt.service.errors import ServiceError
from f5rt.voices import VOICE_ID, Voice, VoiceNotFound, VoiceStore

Kind = Literal["str", "int", "float", "bool"]
FieldValue = str | int | float | bool | None
"""A checked field's value: the JSON scalar its FieldSpec allows (None where nullable)."""
Fields = dict[str, FieldValue]

MAX_SEED = int(ENGINE_BOUNDS["seed"].hi)
# Characters a chat message may legitimately contain among the C0/C1 controls.
_ALLOWED_CONTROLS = frozenset("\n\r\t")


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
    obj: dict[str, object] = {}
    for key, value in pairs:
        if key in obj:
            raise ServiceError(400, "duplicate_key", f"duplicate JSON key {key!r}")
        obj[key] = value
    return obj


def _no_constants(name: str) -> object:
    raise ServiceError(400, "non_finite_number", f"{name} is not a valid JSON number")


def parse_json_object(raw: bytes) -> dict[str, object]:
    """Decode a request body: UTF-8 only, one JSON object, no duplicate keys, no NaN/Infinity."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ServiceError(400, "invalid_utf8", f"request body is not valid UTF-8 (byte {e.start})") from None
    if text.startswith("\ufeff"):
        raise ServiceError(400, "invalid_json", "request body starts with a byte-order mark")
    try:
        obj: object = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constants)
    except ServiceError:
        raise
    except RecursionError:
        raise ServiceError(400, "invalid_json", "JSON nested too deeply") from None
    except ValueError as e:  # JSONDecodeError, and int() refusing a huge number
        raise ServiceError(400, "invalid_json", f"invalid JSON: {e}") from None
    if not isinstance(obj, dict):
        raise ServiceError(400, "not_an_object", f"JSON body must be an object, got {type(obj).__name__}")
    return obj


@dataclass(frozen=True)
class FieldSpec:
    """One accepted body field.

    required: the key must be present; nullable: JSON null is accepted and means "the default"
    (both together: the key must be there, but may say null, like OpenAI's `voice` here).
    option: the SynthesisOptions field it sets, when it sets one (`nfe_step` -> `nfe`): the only
    place a wire name meets an option name.
    """

    kind: Kind
    required: bool = False
    nullable: bool = False
    option: str | None = None


Schema = Mapping[str, FieldSpec]


def check_fields(body: Mapping[str, object], schema: Schema) -> Fields:
    """Unknown fields, missing required fields and wrong JSON types are refused; returns present fields."""
    unknown = sorted(set(body) - set(schema))
    if unknown:
        raise ServiceError(400, "unknown_field", f"unknown field(s) {unknown}; accepted: {sorted(schema)}")
    out: Fields = {}
    for name, spec in schema.items():
        if name not in body:
            if spec.required:
                raise ServiceError(400, "missing_field", f"field {name!r} is required")
            continue
        value = body[name]
        if value is None:
            if not spec.nullable:
                raise ServiceError(400, "invalid_type", f"field {name!r} may not be null")
            out[name] = None
            continue
        out[name] = _typed(name, value, spec.kind)
    return out


def _typed(name: str, value: object, kind: Kind) -> FieldValue:
    """`value` as `kind`, or the refusal naming the field and the JSON type it got."""
    if isinstance(value, bool):
        if kind == "bool":
            return value
    elif kind == "str" and isinstance(value, str) or kind == "int" and isinstance(value, int):
        return value
    elif kind == "float" and isinstance(value, int | float):
        if not math.isfinite(value):
            raise ServiceError(400, "non_finite_number", f"field {name!r} must be a finite number")
        return float(value)
    raise ServiceError(400, "invalid_type", f"field {name!r} must be {kind}, got {_json_type(value)}")


def _json_type(value: object) -> str:
    if isinstance(value, bool):
        return "boolean"
    names: dict[type, str] = {int: "integer", float: "number", str: "string", list: "array", dict: "object"}
    return names.get(type(value), "?")


def check_text(text: str, field: str, max_chars: int) -> str:
    """Refuse text that is empty, too long, or holds control characters or lone surrogates."""
    if len(text) > max_chars:
        raise ServiceError(400, "text_too_long", f"{field!r} has {len(text)} characters; the limit is {max_chars}")
    for i, ch in enumerate(text):
        cat = unicodedata.category(ch)
        if cat == "Cs":
            raise ServiceError(400, "invalid_text", f"{field!r} holds a lone surrogate at index {i}")
        if cat == "Cc" and ch not in _ALLOWED_CONTROLS:
            raise ServiceError(400, "invalid_text", f"{field!r} holds control character U+{ord(ch):04X} at index {i}")
    if not text.strip():
        raise ServiceError(400, "invalid_text", f"{field!r} is empty")
    return text


def check_bound(name: str, value: float, bound: Bound) -> None:
    if not bound.contains(value):
        raise ServiceError(400, "out_of_range", f"{name} must be {bound.describe()}, got {value}")


def check_voice_id(voice_id: object) -> str:
    """Voice ids are plain names: they become a folder name, so nothing else may reach the filesystem."""
    if not isinstance(voice_id, str) or not VOICE_ID.fullmatch(voice_id):
        raise ServiceError(400, "invalid_voice_id", "voice id must match ^[A-Za-z0-9_-]{1,64}$")
    return voice_id


TTS_SCHEMA: Schema = {
    "text": FieldSpec("str", required=True),
    "voice_id": FieldSpec("str", nullable=True),
    "speed": FieldSpec("float", option="speed"),
    "target_rms": FieldSpec("float", option="target_rms"),
    "cross_fade_duration": FieldSpec("float", option="cross_fade"),
    "sway_sampling_coef": FieldSpec("float", nullable=True, option="sway"),  # null: plain uniform schedule
    "cfg_strength": FieldSpec("float", option="cfg"),
    "nfe_step": FieldSpec("int", option="nfe"),
    "fix_duration": FieldSpec("float", nullable=True, option="fix_duration"),
    "remove_silence": FieldSpec("bool", option="remove_silence"),
    "seed": FieldSpec("int", nullable=True),  # null or -1: a random seed (returned in the response)
}
"""`POST /api/tts` (a chat reader's contract, field names kept) and the Triton models' inputs."""

# OpenAI requires model, input and voice (a missing one is 400 there too). `voice` may be null here:
# the server's default voice. `model` is any name: clients hard-code tts-1 and the like.
SPEECH_SCHEMA: Schema = {
    "model": FieldSpec("str", required=True),
    "input": FieldSpec("str", required=True),
    "voice": FieldSpec("str", required=True, nullable=True),  # a string, or OpenAI's {"id": ...} (handled first)
    "instructions": FieldSpec("str"),  # accepted for client compatibility; F5-TTS has no style prompt
    "response_format": FieldSpec("str"),
    "speed": FieldSpec("float", option="speed"),
    "stream_format": FieldSpec("str"),
    "seed": FieldSpec("int", nullable=True),  # extension: reproducible output
}
"""`POST /v1/audio/speech`: OpenAI's fields."""


def build_options(defaults: SynthesisOptions, fields: Fields, limits: Limits) -> SynthesisOptions:
    """SynthesisOptions from checked wire fields over the service's defaults, checked against the limits.

    Each TTS_SCHEMA field with an `option` sets that option when present (other schemas use the same
    names: `speed`, `seed`); absent fields keep the default, and every option, defaults included, is
    checked against the limits under its wire name. The seed is drawn here when the request has none
    (null or -1), so it can be reported back.
    """
    seed = fields.get("seed")
    if seed is None or seed == -1:
        seed = secrets.randbelow(2**31)
    elif not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= MAX_SEED:
        raise ServiceError(400, "out_of_range", f"seed must be -1 or within [0, {MAX_SEED}], got {seed}")
    changes: dict[str, FieldValue] = {"seed": seed}
    for name, spec in TTS_SCHEMA.items():
        if spec.option is not None and name in fields:
            changes[spec.option] = fields[name]
    options = dataclasses.replace(defaults, **changes)  # type: ignore[arg-type]  # kinds checked by check_fields
    bounds = limits.bounds()
    for name, spec in TTS_SCHEMA.items():
        if spec.option in bounds and spec.kind in ("int", "float"):
            value = getattr(options, spec.option)
            if value is not None:  # null sway: uniform schedule; null fix_duration: estimated
                check_bound(name, value, bounds[spec.option])
    try:
        options.validate()  # the engine's own bounds: Limits cannot be looser, so this is belt and braces
    except ValueError as e:
        raise ServiceError(400, "out_of_range", str(e)) from None
    return options


@dataclass(frozen=True)
class TtsRequest:
    """A checked `/api/tts`-shaped request: its text, the voice it names (None: the default) and options."""

    text: str
    voice_id: str | None
    options: SynthesisOptions


def parse_tts(body: Mapping[str, object], defaults: SynthesisOptions, limits: Limits) -> TtsRequest:
    """Check a TTS_SCHEMA body (fields, text, options against the limits); ServiceError names the fault."""
    fields = check_fields(body, TTS_SCHEMA)
    text = fields["text"]
    assert isinstance(text, str)  # required str: check_fields has made sure
    text = check_text(text, "text", limits.max_text_chars)
    options = build_options(defaults, fields, limits)
    voice_id = fields.get("voice_id")
    return TtsRequest(text, None if voice_id is None else check_voice_id(voice_id), options)


def default_voice_id(store: VoiceStore, default: str | None) -> str:
    """The voice a request that names none gets: `default`, else the first stored voice by name."""
    if default is not None:
        return default
    ids = sorted(store.list())
    if not ids:
        raise ServiceError(
            404, "voice_not_found", "no voices are stored; add one (a folder <id>/ with ref.wav and ref.txt)"
        )
    return ids[0]


def resolve_voice(store: VoiceStore, voice_id: str | None, default: str | None = None) -> tuple[str, Voice]:
    """(id, Voice) of the named voice, or of the default one when None. Reads files: call it off an event loop."""
    voice_id = check_voice_id(default_voice_id(store, default) if voice_id is None else voice_id)
    try:
        return voice_id, store.get(voice_id)
    except VoiceNotFound:
        raise ServiceError(404, "voice_not_found", f"no voice {voice_id!r} in the voices folder") from None
    except F5RTError as e:  # a stored voice whose audio or transcript is unusable: the operator's to fix
        raise ServiceError(500, "voice_unusable", f"stored voice {voice_id!r} cannot be used: {e}") from None


__all__ = [
    "SPEECH_SCHEMA",
    "TTS_SCHEMA",
    "FieldSpec",
    "Fields",
    "FieldValue",
    "TtsRequest",
    "build_options",
    "check_bound",
    "check_fields",
    "check_text",
    "check_voice_id",
    "default_voice_id",
    "parse_json_object",
    "parse_tts",
    "resolve_voice",
]
