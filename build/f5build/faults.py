"""Fault injection for the build's own tests: deliver a real signal to this process at a named point.

`F5BUILD_FAULT` holds one or more `SIGNAL@PATTERN[#N]` entries separated by commas, e.g.
`SIGKILL@step.onnx` or `SIGTERM@manifest.json#2`. At the N-th (default first) moment a file whose
name matches PATTERN (fnmatch) is complete in its temp file and about to replace its target, the
temp file is cut to half its length (what a writer killed mid-write leaves) and the signal is sent
to this process with `os.kill`, so the process dies or unwinds exactly as it would from outside.
`stage:<name>` as PATTERN fires when the CLI starts that stage (before it reads anything).
`EIO@PATTERN` makes that write fail with OSError(EIO) instead (a disk error cannot be made here).

Unset (always, outside tests), nothing is installed and nothing is checked.
"""

from __future__ import annotations

import errno
import fnmatch
import os
import signal
from dataclasses import dataclass, field
from pathlib import Path

ENV = "F5BUILD_FAULT"
EIO = -1  # not a signal: the write fails with OSError(EIO) instead, as on a failing disk


@dataclass
class Fault:
    signum: int
    pattern: str
    nth: int = 1
    seen: int = field(default=0)

    def hit(self, name: str, temp: Path | None = None) -> None:
        if not fnmatch.fnmatch(name, self.pattern):
            return
        self.seen += 1
        if self.seen != self.nth:
            return
        if self.signum == EIO:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        if temp is not None and temp.is_file():
            size = temp.stat().st_size
            with open(temp, "rb+") as f:
                f.truncate(size // 2)
        os.kill(os.getpid(), self.signum)


def parse(spec: str) -> list[Fault]:
    faults = []
    for item in filter(None, (s.strip() for s in spec.split(","))):
        sig, _, rest = item.partition("@")
        pattern, _, nth = rest.partition("#")
        if not pattern:
            raise ValueError(f"{ENV}: {item!r} is not SIGNAL@PATTERN[#N]")
        signum = EIO if sig.upper() == "EIO" else int(signal.Signals[sig.upper()])
        faults.append(Fault(signum, pattern, int(nth or 1)))
    return faults


_FAULTS: list[Fault] = []


def install() -> None:
    """Arm the faults named in F5BUILD_FAULT (called once by the CLI)."""
    spec = os.environ.get(ENV, "")
    if not spec or _FAULTS:
        return
    from f5rt import files

    _FAULTS.extend(parse(spec))

    def before_replace(temp: Path, target: Path) -> None:
        for f in _FAULTS:
            f.hit(target.name, temp)

    files.before_replace_hooks.append(before_replace)


def at_stage(stage: str) -> None:
    for f in _FAULTS:
        f.hit(f"stage:{stage}")
