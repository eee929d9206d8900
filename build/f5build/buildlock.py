"""One build at a time per artifacts folder: a lock file holding who builds, and since when.

`<artifacts-root>/.<name>.lock` (beside the folder, so a copied artifacts folder carries no lock) is
held with `fcntl.flock` for the whole `f5build` run; its content says who holds it (pid, host, start
time, command), and the holder removes it when it is done. flock is released by the kernel when its
holder dies in any way, SIGKILL included, so a lock can never outlive its process: a second build
either waits for it (`--lock-wait SECONDS`) or is refused at once with the holder named. A lock file
that exists when it is taken was left by a holder that died without cleaning up (killed, out of
memory): the new holder says so,
then removes what a killed writer can leave in the folder (`sweep_leftovers`), so a rerun never
needs manual cleanup.

    with BuildLock(root, wait_s=0) as lock:   # raises LockBusy when another build holds it
        ...                                    # lock.took_over: the stale holder's record, or None
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from f5rt.files import WriteError, is_temp_name

# Temp folders the stages make inside the artifacts folder (tempfile.TemporaryDirectory(prefix=...)).
TEMP_DIR_PREFIXES = (".quant-", ".compile-", ".triton-", ".stage-")


class LockBusy(RuntimeError):
    """Another live build holds the artifacts folder's lock."""

    def __init__(self, path: Path, holder: dict[str, Any], waited_s: float) -> None:
        self.path = path
        self.holder = holder
        who = describe(holder) if holder else "another process (it has not written its name yet)"
        waited = f" after waiting {waited_s:.1f} s" if waited_s > 0 else ""
        super().__init__(
            f"{path.parent / path.name.removesuffix('.lock').lstrip('.')}: another build is running on this "
            f"folder{waited}: {who} (lock {path}); wait for it to finish, stop it, or pass "
            "--lock-wait SECONDS to wait"
        )


def describe(holder: dict[str, Any]) -> str:
    started = holder.get("started")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)) if isinstance(started, (int, float)) else "?"
    cmd = holder.get("command") or "?"
    return f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}, started {when} ({cmd})"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, another user's
    return True


def sweep_leftovers(root: Path) -> list[Path]:
    """Remove what a killed writer leaves under `root`: atomic-write temp files and stage temp
    folders. Only call it while holding the folder's lock (nobody else is writing then)."""
    removed: list[Path] = []
    if not root.is_dir():
        return removed
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        for d in list(dirnames):
            if d.startswith(TEMP_DIR_PREFIXES):
                shutil.rmtree(here / d, ignore_errors=True)
                dirnames.remove(d)
                removed.append(here / d)
        for f in filenames:
            if is_temp_name(f):
                with contextlib.suppress(FileNotFoundError):
                    (here / f).unlink()
                    removed.append(here / f)
    return removed


def lock_path(root: Path) -> Path:
    root = Path(root)
    return root.parent / f".{root.name}.lock"


@dataclass
class BuildLock:
    """The artifacts folder's lock (see the module docstring). Re-entrant within one process."""

    root: Path
    wait_s: float = 0.0
    command: str = ""  # what the holder runs, for the message a second build gets (default: sys.argv)
    poll_s: float = 0.2
    took_over: dict[str, Any] | None = None
    swept: tuple[Path, ...] = ()
    _fd: int | None = None
    _made: tuple[Path, ...] = ()

    @property
    def path(self) -> Path:
        return lock_path(self.root)

    def _read_holder(self, fd: int) -> dict[str, Any]:
        os.lseek(fd, 0, os.SEEK_SET)
        raw = b""
        while chunk := os.read(fd, 65536):
            raw += chunk
        try:
            data = json.loads(raw.decode("utf-8")) if raw.strip() else {}
        except (UnicodeDecodeError, json.JSONDecodeError):
            data = {"pid": "?", "command": "unreadable lock file"}
        return data if isinstance(data, dict) else {}

    def _open_locked(self) -> int:
        """An fd of the lock file holding its flock; waits up to wait_s, then LockBusy.

        The file is removed by the holder that releases it, so a waiter can end up holding the
        flock of a file that is gone: it then opens the path again (the usual flock + inode check).
        """
        t0 = time.monotonic()
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                while True:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        waited = time.monotonic() - t0
                        if waited >= self.wait_s:
                            raise LockBusy(self.path, self._read_holder(fd), waited) from None
                        time.sleep(min(self.poll_s, max(self.wait_s - waited, 0.01)))
                try:
                    same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
                except FileNotFoundError:
                    same = False
            except BaseException:
                os.close(fd)
                raise
            if same:
                return fd
            os.close(fd)  # released and removed while we waited: lock the file that is there now

    def acquire(self) -> BuildLock:
        key = str(self.path.resolve())
        if key in _HELD:
            _HELD[key][1] += 1
            return self
        missing = [d for d in (self.path.parent, *self.path.parent.parents) if not d.exists()]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._made = tuple(missing)  # folders made only to hold the lock: removed with it if still empty
        fd = self._open_locked()
        try:
            previous = self._read_holder(fd)
            if previous and previous.get("pid") != os.getpid():
                self.took_over = previous
            record = {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "started": time.time(),
                "command": (self.command or " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]))[:300],
            }
            data = (json.dumps(record) + "\n").encode("utf-8")
            try:
                os.ftruncate(fd, 0)
                os.pwrite(fd, data, 0)
                os.fsync(fd)
            except OSError as e:
                raise WriteError(e, self.path, None) from e
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        _HELD[key] = [fd, 1]
        self.swept = tuple(sweep_leftovers(self.root))
        return self

    def release(self) -> None:
        key = str(self.path.resolve())
        entry = _HELD.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] > 0:
            return
        fd = entry[0]
        del _HELD[key]
        with contextlib.suppress(OSError):
            self.path.unlink()  # still holding the flock: a waiter sees the file gone and reopens
        os.close(fd)
        self._fd = None
        for d in self._made:  # a refused first build leaves no artifacts root behind
            with contextlib.suppress(OSError):
                d.rmdir()

    def __enter__(self) -> BuildLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


# lock file path -> [fd, depth]: this process's held locks (a stage called inside `pipeline`, or a
# manifest update inside a stage, takes the lock it already holds)
_HELD: dict[str, list[int]] = {}


def holds_lock(root: Path) -> bool:
    return str(lock_path(root).resolve()) in _HELD
