"""Training state files: written atomically, read back with a clear error when damaged.

A training run is killed at any moment (Ctrl-C, the OOM killer, a session ending); its state file is
replaced only by a complete newer one (temp file + fsync + rename), so the newest state on disk is
always loadable and a rerun resumes from it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from f5rt.files import atomic_write_bytes


def save_state(path: Path, state: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save(state, tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def load_state(path: Path, require: str = "step") -> dict[str, Any] | None:
    """The state in `path`, or None when there is none yet; `require` is a key it must hold (a training
    state has its `step`, a kept EMA snapshot its `ema_model_state_dict`)."""
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # torch raises many types for a damaged file
        raise ValueError(
            f"{path}: training state unreadable ({type(e).__name__}: {e}); delete it to start over"
        ) from None
    if not isinstance(state, dict) or require not in state:
        raise ValueError(f"{path}: not a training state (no {require!r}); delete it to start over")
    return state


def warm_starts_of(state: dict[str, Any]) -> list[int]:
    """The steps at which a trainer's state was seeded from a release (`--train-from`): its optimizer
    moments started at zero there and its warmup ran again. A state from before the record kept only
    the newest (`warmup_from`, 0 for a run that never warm-started)."""
    if "warm_starts" in state:
        return [int(s) for s in state["warm_starts"]]
    latest = int(state.get("warmup_from", 0))
    return [latest] if latest > 0 else []


def note_setting(history: list[dict[str, Any]], step: int, setting: dict[str, Any]) -> None:
    """Record `setting` as taking effect at `step`, unless the history's newest entry already holds it: the
    one rule of the settings a resumed run may change (CTC aid, average upsampling, learning rate, corpus)."""
    last = history[-1] if history else None
    if last is None or {k: last.get(k) for k in setting} != setting:
        history.append({"from_step": step, **setting})


def corpus_history_of(state: dict[str, Any]) -> list[dict[str, Any]]:
    """A trainer's record of the corpora it trained on: each corpus' identity (`Corpus.identity`) and the
    step it took effect. A state from before the record has none; the record starts where it is resumed."""
    return [dict(entry) for entry in state.get("corpus_history", [])]


@contextlib.contextmanager
def staged_folder(out: Path) -> Iterator[Path]:
    """A temporary folder beside `out` that replaces it when the block succeeds.

    The previous `out` stays whole until the new one is complete (a corpus, a release); a block that
    raises, or a process that is killed, leaves it as it was and at most a `.name.*` folder behind.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    os.chmod(tmp, 0o755)  # mkdtemp makes 0700; these are ordinary shared folders
    try:
        yield tmp
        replace_folder(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def replace_folder(new: Path, out: Path) -> Path:
    """Put the complete folder `new` in `out`'s place (both on one filesystem); returns `out`.

    The previous `out` is moved aside to `.name.old` and removed only once `new` is in place; an `.old`
    a killed run left behind is removed first (a rename onto a folder that holds files fails).
    """
    old = out.with_name(f".{out.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if out.exists():
        os.replace(out, old)
    os.replace(new, out)
    shutil.rmtree(old, ignore_errors=True)
    return out


def trim_log(path: Path, step: int) -> int:
    """Cut a training log back to the state a run resumes from; returns how many lines went.

    A run killed between two saves has logged steps its state never reached; the resumed run trains
    them again, so without this the log (and the loss curve and signal table drawn from it) would hold
    two records of each. A line torn by the kill (not JSON) goes too. Rewritten atomically."""
    if not path.is_file():
        return 0
    kept: list[str] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    for line in lines:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and int(row.get("step", 0)) <= step:
            kept.append(line)
    if len(kept) < len(lines):
        atomic_write_bytes(path, "".join(f"{line}\n" for line in kept).encode("utf-8"))
    return len(lines) - len(kept)
