"""Atomic file writes and content hashes: the public API the build and the runtime both write through.

Nothing is ever overwritten half-written: data goes to a temp file in the same folder
(`.<name>.<random>.tmp`), is flushed and fsynced, then renamed over the target (rename is atomic on
POSIX within one filesystem) and the folder is fsynced. A process killed before the rename leaves the
target as it was plus, at worst, a hidden temp file that `is_temp_name` recognises (the build sweeps
them up before it writes into a folder again).

A write that fails for lack of space or a broken or read-only disk raises `WriteError`: an `OSError`
with the same errno whose message names the file being written, how much of it was written and how
much space is free there, so a caller can print it as one line.

    with atomic_path("out.onnx") as tmp:        # for writers that insist on a file name
        onnx.save(model, str(tmp))
    atomic_write_json("manifest.json", data)     # or bytes / an open file (atomic_open)
    sha256_file("out.onnx")
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

__all__ = [
    "WriteError",
    "atomic_open",
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_json",
    "before_replace_hooks",
    "format_bytes",
    "free_bytes",
    "is_temp_name",
    "replace_into",
    "sha256_bytes",
    "sha256_file",
    "sha256_json",
]

_CHUNK = 1 << 20
TEMP_SUFFIX = ".tmp"

# Called with (temp, target) after a temp file is complete and fsynced, right before it replaces its
# target. Empty in normal use; the build's fault injection (F5BUILD_FAULT) adds one to kill itself at
# a precise point of a write.
before_replace_hooks: list[Callable[[Path, Path], None]] = []

# errnos that mean "the disk, not the data": reported with the path and the free space.
_DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO, errno.EROFS, errno.EACCES, errno.EPERM}


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _umask()  # read once at import: os.umask is process-wide and not thread-safe to probe


def format_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"  # pragma: no cover - the loop returns


def free_bytes(path: str | os.PathLike[str]) -> int | None:
    """Bytes free for an unprivileged writer on the filesystem holding `path` (its nearest existing
    parent); None when that cannot be asked."""
    p = Path(path)
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        st = os.statvfs(p)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


class WriteError(OSError):
    """A write that the disk refused (full, quota, file size limit, I/O error, read-only, no permission).

    `str()` is one line: the file, what the system said, how much was written and how much is free.
    """

    def __init__(self, err: OSError, target: Path, written: int | None) -> None:
        super().__init__(err.errno, err.strerror or str(err), str(target))
        self.target = target
        self.written = written
        self.free = free_bytes(target.parent)

    def __str__(self) -> str:
        what = self.strerror or "write failed"
        parts = [f"{self.target}: cannot write it ({what})"]
        if self.written:
            parts.append(f"{format_bytes(self.written)} of it were written before the error")
        if self.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG) and self.free is not None:
            parts.append(f"{format_bytes(self.free)} free on its filesystem: free space (or raise the limit) and rerun")
        elif self.errno == errno.EROFS:
            parts.append("the folder is on a read-only filesystem: write the artifacts elsewhere or remount it")
        elif self.errno in (errno.EACCES, errno.EPERM):
            parts.append("no permission to write there: fix the folder's permissions or write elsewhere")
        elif self.errno == errno.EIO:
            parts.append("the disk reported an I/O error: check the disk, then rerun")
        return "; ".join(parts)


def is_temp_name(name: str) -> bool:
    """True for a temp file name `atomic_path` makes (`.<target>.<random>.tmp`)."""
    return name.startswith(".") and name.endswith(TEMP_SUFFIX) and name.count(".") >= 3


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems do not fsync folders; the rename itself is still atomic
    finally:
        os.close(fd)


def replace_into(done: str | os.PathLike[str], target: str | os.PathLike[str]) -> None:
    """Move a complete, fsynced file `done` over `target` (same filesystem): atomic, folder fsynced.

    For files made in a temp folder beside the target (e.g. a graph and its external data). A disk
    error raises `WriteError` naming `target`.
    """
    done, target = Path(done), Path(target)
    for hook in before_replace_hooks:
        hook(done, target)
    try:
        os.replace(done, target)
    except OSError as e:
        if e.errno not in _DISK_ERRNOS:
            raise
        raise WriteError(e, target, None) from e
    _fsync_dir(target.parent)


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temp path beside `target`; on success rename it over `target`, else delete it.

    For writers that insist on a file name (torch.onnx.export, onnx.save, soundfile).
    A disk error (full, read-only, I/O) while writing, syncing or renaming raises `WriteError`.
    """
    target = Path(target)
    tmp_path: Path | None = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=TEMP_SUFFIX, dir=target.parent)
        os.close(fd)
        tmp_path = Path(tmp)
        os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the usual permissions
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        replace_into(tmp_path, target)
    except OSError as e:
        # an error about another file (one the writer reads, say) is not this write's to explain
        other = e.filename is not None and Path(e.filename) not in (tmp_path, target, target.parent)
        if isinstance(e, WriteError) or e.errno not in _DISK_ERRNOS or other:
            raise
        written = None
        if tmp_path is not None:
            with contextlib.suppress(OSError):
                written = tmp_path.stat().st_size
        raise WriteError(e, target, written) from e
    finally:
        if tmp_path is not None and tmp_path.exists():
            with contextlib.suppress(OSError):
                tmp_path.unlink()


@contextlib.contextmanager
def atomic_open(target: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temp file for writing that replaces `target` only when the block succeeds."""
    with atomic_path(target) as tmp, open(tmp, mode) as f:
        yield f
        f.flush()


def atomic_write_bytes(target: str | os.PathLike[str], data: bytes) -> None:
    with atomic_open(target, "wb") as f:
        f.write(data)


def atomic_write_json(target: str | os.PathLike[str], obj: Any) -> None:
    data = json.dumps(obj, indent=2, sort_keys=False, ensure_ascii=False) + "\n"
    atomic_write_bytes(target, data.encode("utf-8"))


def sha256_file(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_CHUNK):
            h.update(block)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_json(obj: Any) -> str:
    """Hash of a JSON-able object, independent of key order: used as a stage's input fingerprint."""
    return sha256_bytes(json.dumps(obj, sort_keys=True, ensure_ascii=True).encode("ascii"))
