"""Reading the build's input files so that a bad one is one line naming the file and the problem.

Checkpoints arrive truncated, YAML files arrive empty or hand-edited: every reader the build uses
for an input it did not write itself goes through here and raises `BuildInputError` (a ValueError,
so `f5build` exits with code 2 and prints `f5build <stage>: error: <path>: <problem>`), never a
library's traceback.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import yaml


class BuildInputError(ValueError):
    """An input file the build cannot use: the message is one line, file first."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = Path(path)
        self.problem = " ".join(str(problem).split())  # one line, whatever the library said
        super().__init__(f"{self.path}: {self.problem}")


def _yaml_problem(e: yaml.YAMLError) -> str:
    mark = getattr(e, "problem_mark", None)
    problem = getattr(e, "problem", None) or str(e)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"not valid YAML ({problem}{where})"


def read_text(path: str | Path, what: str) -> str:
    """A UTF-8 text file; missing -> FileNotFoundError naming `what`, undecodable -> BuildInputError."""
    path = Path(path)
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} {path} not found") from None
    except IsADirectoryError:
        raise BuildInputError(path, f"is a folder, expected the {what} file") from None
    except UnicodeDecodeError as e:
        raise BuildInputError(path, f"not UTF-8 text (byte {e.start}): is this the {what}?") from None


def read_yaml(path: str | Path, what: str, *, keys: tuple[str, ...] = ()) -> dict[str, Any]:
    """A YAML mapping (with `keys` present): empty, malformed or of another shape -> BuildInputError."""
    text = read_text(path, what)
    if not text.strip():
        raise BuildInputError(path, f"empty file; expected the {what} (a YAML mapping)")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise BuildInputError(path, _yaml_problem(e)) from None
    if not isinstance(data, dict):
        want = f" with {', '.join(repr(k) for k in keys)}" if keys else ""
        raise BuildInputError(path, f"expected a mapping{want} ({what}), got {type(data).__name__}")
    missing = [k for k in keys if k not in data]
    if missing:
        raise BuildInputError(path, f"lacks {', '.join(repr(k) for k in missing)} ({what})")
    return data


def torch_load(path: str | Path, what: str) -> Any:
    """torch.load(weights_only=True) of a checkpoint; truncated or corrupt -> BuildInputError."""
    import torch

    path = Path(path)
    if path.stat().st_size == 0:
        raise BuildInputError(path, f"empty file; expected the {what}: download it again")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError, KeyError, OSError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if "Weights only load failed" in first:
            first = "it holds Python objects besides tensors (not a plain checkpoint)"
        raise BuildInputError(path, f"truncated or corrupt {what} ({first[:160]}): download it again") from None


def safetensors_load(path: str | Path, what: str) -> dict[str, Any]:
    """safetensors.torch.load_file; truncated or corrupt -> BuildInputError."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if path.stat().st_size == 0:
        raise BuildInputError(path, f"empty file; expected the {what}: download it again")
    try:
        return dict(load_file(str(path)))
    except (SafetensorError, RuntimeError, ValueError, OSError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise BuildInputError(path, f"truncated or corrupt {what} ({first[:160]}): download it again") from None
