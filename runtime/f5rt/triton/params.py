"""The parameters a repository's `config.pbtxt` hands the Python-backend model, parsed strictly.

Triton passes `parameters { key: ... value: { string_value: ... } }` to the model as strings inside
the model config JSON. Every knob of the model lives there (not in environment variables) so that a
repository copied to another machine or mounted into a Kubernetes pod serves exactly what its
config says, and `GET /v2/models/<name>/config` shows it. Relative paths are relative to the
repository root (the folder holding `f5tts/` and `f5tts_stream/`), so `artifacts/<model>/` can be
moved as a whole; absolute paths are kept as they are (a mounted voices volume).

A wrong or unknown parameter fails the model's load with a message naming it: a typo must not
silently serve defaults.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from f5rt.limits import Limits
from f5rt.names import BACKENDS


class ParameterError(ValueError):
    """A config.pbtxt parameter that is missing, unknown or malformed."""


@dataclass(frozen=True)
class ModelParams:
    """What one model instance needs: where the engines and voices are, how to run them.

    default_nfe: NFE steps of a request that sends no `nfe` (f5-tts' default is 32).
    default_cfg: guidance strength of a request that sends no `cfg` (f5-tts' default is 2).
    threads: ONNX Runtime intra-op threads per instance (0 = the CPU budget split between the CPU instances).
    limits: the request bounds of `f5rt serve` (f5rt.limits.Limits), from a JSON file or defaults.
    """

    artifacts: Path
    voices: Path
    voice_cache: Path | None
    backend: str
    precision: str
    default_nfe: int
    threads: int
    default_cfg: float
    limits: Limits

    # The keys and their defaults as the repository writer emits them (strings, as Triton holds them).
    DEFAULTS = {
        "artifacts": "..",
        "voices": "../voices",
        "voice_cache": "",
        "backend": "onnxruntime",
        "precision": "fp32",
        "default_nfe": "32",
        "default_cfg": "2",
        "threads": "0",
        "limits": "",
    }

    @classmethod
    def from_model_config(cls, model_config: Mapping[str, Any], repository_root: Path) -> ModelParams:
        """Parse `model_config["parameters"]` (Triton's JSON form: {key: {"string_value": ...}})."""
        raw = model_config.get("parameters") or {}
        if not isinstance(raw, Mapping):
            raise ParameterError(f"config parameters must be a map, got {type(raw).__name__}")
        values: dict[str, str] = {}
        for key, value in raw.items():
            if isinstance(value, Mapping):
                value = value.get("string_value", "")
            if not isinstance(value, str):
                raise ParameterError(f"parameter {key!r} must be a string_value, got {value!r}")
            values[str(key)] = value
        return cls.from_strings(values, repository_root)

    @classmethod
    def from_strings(cls, values: Mapping[str, str], repository_root: Path) -> ModelParams:
        unknown = sorted(set(values) - set(cls.DEFAULTS))
        if unknown:
            raise ParameterError(f"unknown config parameter(s) {unknown}; known: {sorted(cls.DEFAULTS)}")
        v = {**cls.DEFAULTS, **values}
        root = Path(repository_root)

        def path(key: str) -> Path:
            text = v[key].strip()
            if not text:
                raise ParameterError(f"parameter {key!r} is empty; give a path (relative to {root})")
            p = Path(os.path.expanduser(text))
            return p if p.is_absolute() else (root / p).resolve()

        def integer(key: str, lo: int, hi: int) -> int:
            try:
                n = int(v[key].strip())
            except ValueError:
                raise ParameterError(f"parameter {key!r} must be an integer, got {v[key]!r}") from None
            if not lo <= n <= hi:
                raise ParameterError(f"parameter {key!r} must be within [{lo}, {hi}], got {n}")
            return n

        def real(key: str) -> float:
            try:
                return float(v[key].strip())
            except ValueError:
                raise ParameterError(f"parameter {key!r} must be a number, got {v[key]!r}") from None

        def within_limits(key: str, x: float, bounds: tuple[float, float], name: str) -> None:
            lo, hi = bounds
            if not lo <= x <= hi:  # NaN is outside every range
                raise ParameterError(f"parameter {key!r} {x:g} is outside the limits' {name} [{lo:g}, {hi:g}]")

        backend = v["backend"].strip()
        if backend not in BACKENDS:
            raise ParameterError(f"parameter 'backend' must be one of {list(BACKENDS)}, got {backend!r}")
        precision = v["precision"].strip()
        if not precision:
            raise ParameterError("parameter 'precision' is empty (fp32 | fp16 | int8)")
        limits = Limits()
        if v["limits"].strip():
            try:
                limits = Limits.from_json(path("limits"))
            except ValueError as e:
                raise ParameterError(f"parameter 'limits': {e}") from None
        default_nfe = integer("default_nfe", 1, 1000)
        within_limits("default_nfe", default_nfe, limits.nfe_range, "nfe_range")
        default_cfg = real("default_cfg")
        within_limits("default_cfg", default_cfg, limits.cfg_range, "cfg_range")
        return cls(
            artifacts=path("artifacts"),
            voices=path("voices"),
            voice_cache=path("voice_cache") if v["voice_cache"].strip() else None,
            backend=backend,
            precision=precision,
            default_nfe=default_nfe,
            threads=integer("threads", 0, 1024),
            default_cfg=default_cfg,
            limits=limits,
        )

    @classmethod
    def from_args(cls, args: Mapping[str, str]) -> ModelParams:
        """From the `args` Triton gives `initialize()`: the model config JSON and the model's folder."""
        try:
            config = json.loads(args["model_config"])
        except (KeyError, ValueError) as e:
            raise ParameterError(f"Triton passed no readable model_config ({e})") from None
        # args["model_repository"] is the model's own folder (<repository>/<model name>).
        return cls.from_model_config(config, Path(args["model_repository"]).parent)


__all__ = ["BACKENDS", "ModelParams", "ParameterError"]
