"""A corpus folder being made: written in chunks, resumed after a kill, renamed into place when whole.

A corpus the size stage 2 asks for (114 hours: 20 GB of audio and 8 GB of mels) neither fits in
memory nor is made in a few minutes, so `make_corpus` speaks it a chunk of utterances at a time and
appends each chunk here. The folder is `.<name>.making` beside the corpus:

    audio.npy, mel.npy   NumPy files whose header is written last: appended rows, then the final shape
    utts.jsonl           one line per utterance written so far
    progress.json        after each complete chunk: what is being made (`key`), how many utterances are
                         done, and each file's size at that point

A run killed mid-chunk resumes from the last complete chunk: every file is cut back to the size
progress.json recorded, so the resumed corpus is byte for byte the one an uninterrupted run makes (the
corpus is deterministic). A folder left by a run that made something else (other options, another
espeak-ng) is discarded. The corpus' own folder is replaced only by a complete one (`replace_out`).

The header of a .npy file has a fixed length for any shape (NumPy pads it so that an array can grow in
place), so it is reserved first and written over once the row count is known: the result is the file
`np.save` writes, without holding the array or copying it.
"""

from __future__ import annotations

import io
import json
import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from f5build.train.state import replace_folder
from f5rt.files import WriteError, atomic_write_json

NPY_HEADER_BYTES = 128
PROGRESS = "progress.json"


def npy_header(dtype: np.dtype[Any], shape: tuple[int, ...]) -> bytes:
    """The header `np.save` writes for a C-order array of this dtype and shape (always NPY_HEADER_BYTES)."""
    buf = io.BytesIO()
    d = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(buf, d)
    head = buf.getvalue()
    if len(head) != NPY_HEADER_BYTES:
        raise ValueError(f"a .npy header of {len(head)} bytes for shape {shape}, {NPY_HEADER_BYTES} expected")
    return head


@dataclass(frozen=True)
class RowFile:
    """An appendable .npy file in the staging folder: its name, element type and the shape of one row."""

    name: str
    dtype: np.dtype[Any]
    row: tuple[int, ...] = ()

    @property
    def row_bytes(self) -> int:
        return int(np.prod(self.row, dtype=np.int64)) * self.dtype.itemsize


@dataclass(frozen=True)
class Progress:
    """What progress.json records after a complete chunk (its `key` aside)."""

    done: int
    """Utterances written."""
    rows: dict[str, int]
    """Rows written to each .npy file."""
    lines_bytes: int
    """Bytes of utterance lines written."""


class Staging:
    """The staging folder of one corpus (see the module docstring). Use one at a time per corpus: the
    caller holds the corpus' lock (f5build.buildlock) while it writes here."""

    def __init__(self, out: Path, key: dict[str, Any], files: Iterable[RowFile], lines: str = "utts.jsonl") -> None:
        self.out = out
        self.folder = out.parent / f".{out.name}.making"
        self.key = json.loads(json.dumps(key))  # as progress.json gives it back (lists, not tuples)
        self.files = {f.name: f for f in files}
        self.lines = lines
        self.done = 0
        self.rows = dict.fromkeys(self.files, 0)
        self._lines_bytes = 0

    def open(self) -> int:
        """Resume what a previous run left, or start afresh; returns the utterances already written."""
        progress = self._read_progress()
        if progress is None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder.mkdir(parents=True)
            os.chmod(self.folder, 0o755)
            for f in self.files.values():
                (self.folder / f.name).write_bytes(b"\0" * NPY_HEADER_BYTES)
            (self.folder / self.lines).write_bytes(b"")
            self.done, self.rows = 0, dict.fromkeys(self.files, 0)
            self._write_progress()
            return 0
        self.done, self.rows, self._lines_bytes = progress.done, progress.rows, progress.lines_bytes
        for name, size in self._sizes(self.rows, self._lines_bytes).items():
            with open(self.folder / name, "r+b") as fh:
                fh.truncate(size)  # what the killed run appended after its last complete chunk goes
        return self.done

    def append(self, lines: list[str], rows: dict[str, np.ndarray]) -> None:
        """One complete chunk: a line per utterance and the rows of each file; recorded only once all of it
        is on disk, so a kill in between leaves the previous chunk as the point to resume from."""
        if set(rows) != set(self.files):
            raise ValueError(f"a chunk has rows for {sorted(rows)}, the corpus writes {sorted(self.files)}")
        for name, data in rows.items():
            f = self.files[name]
            if data.dtype != f.dtype or data.shape[1:] != f.row:
                raise ValueError(f"{name}: rows of {data.dtype} {data.shape[1:]}, {f.dtype} {f.row} expected")
        for name, data in rows.items():
            self._append_bytes(name, np.ascontiguousarray(data).tobytes())
        self._append_bytes(self.lines, "".join(line + "\n" for line in lines).encode("utf-8"))
        for name, data in rows.items():
            self.rows[name] += data.shape[0]
        self.done += len(lines)
        self._write_progress()

    def finish(self) -> Path:
        """Write every .npy header, then return the folder for the corpus' last files (the caller writes
        them, then `replace_out`). progress.json stays until then: a run killed while the last files are
        hashed resumes with every row written (the headers are written again, the same)."""
        for name, f in self.files.items():
            with open(self.folder / name, "r+b") as fh:
                fh.write(npy_header(f.dtype, (self.rows[name], *f.row)))
                fh.flush()
                os.fsync(fh.fileno())
        return self.folder

    def replace_out(self) -> Path:
        """Put the finished folder in the corpus' place; the previous corpus stays whole until then."""
        (self.folder / PROGRESS).unlink()
        return replace_folder(self.folder, self.out)

    def _sizes(self, rows: dict[str, int], lines_bytes: int) -> dict[str, int]:
        """Each file's size with `rows` rows written and `lines_bytes` of utterance lines."""
        sizes = {name: NPY_HEADER_BYTES + rows[name] * f.row_bytes for name, f in self.files.items()}
        return sizes | {self.lines: lines_bytes}

    def _append_bytes(self, name: str, data: bytes) -> None:
        """Append and sync; a write the disk refuses (full, file size limit, I/O error) raises WriteError
        naming the file and the free space. The chunk is then not recorded, so a rerun cuts it off and
        speaks it again."""
        path = self.folder / name
        try:
            with open(path, "ab") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as e:
            raise WriteError(e, path, None) from e

    def _read_progress(self) -> Progress | None:
        """What progress.json says was written, or None where there is none, it is for something else
        (another key) or it does not describe the files beside it: then the run starts afresh."""
        try:
            raw = json.loads((self.folder / PROGRESS).read_text(encoding="utf-8"))
            progress = Progress(
                int(raw["done"]), {str(k): int(v) for k, v in raw["rows"].items()}, int(raw["lines_bytes"])
            )
            if raw["key"] != self.key or set(progress.rows) != set(self.files):
                return None
            if min(progress.done, progress.lines_bytes, *progress.rows.values()) < 0:
                return None
            for name, size in self._sizes(progress.rows, progress.lines_bytes).items():
                if (self.folder / name).stat().st_size < size:
                    return None
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None
        return progress

    def _write_progress(self) -> None:
        self._lines_bytes = (self.folder / self.lines).stat().st_size
        progress = {"key": self.key, "done": self.done, "rows": self.rows, "lines_bytes": self._lines_bytes}
        atomic_write_json(self.folder / PROGRESS, progress)
