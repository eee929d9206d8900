"""Free-space checks before a stage writes something large, so a full disk stops it at the start.

A stage that will write gigabytes (export of a full-size model, calibration recordings, quantized
variants) first asks `require_space(folder, need, what)`; with too little room it raises
`NotEnoughSpace` (an OSError, ENOSPC) naming the folder, the space needed and the space free, before
it has spent minutes or touched a file. Estimates are upper bounds with a margin; writes stay atomic
either way, so an estimate that is off only changes when the stage fails, never what it leaves.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from f5rt.files import format_bytes, free_bytes

MARGIN = 1.1  # estimates are rough: ask for 10 % more
ARTIFACTS_ELSEWHERE = "write the artifacts elsewhere with --artifacts-root"
SLACK = 16 * 1024 * 1024  # manifest, indexes, reports: small files that come with every stage


class NotEnoughSpace(OSError):
    """Too little free space for what a stage is about to write."""

    def __init__(self, folder: Path, need: int, free: int, what: str, elsewhere: str = ARTIFACTS_ELSEWHERE) -> None:
        super().__init__(errno.ENOSPC, os.strerror(errno.ENOSPC), str(folder))
        self.folder, self.need, self.free, self.what, self.elsewhere = folder, need, free, what, elsewhere

    def __str__(self) -> str:
        return (
            f"{self.folder}: {self.what} needs about {format_bytes(self.need)} but only {format_bytes(self.free)} "
            f"is free there; free space (or {self.elsewhere}) and rerun"
        )


def needed(estimate: float) -> int:
    return int(estimate * MARGIN) + SLACK


def require_space(
    folder: str | os.PathLike[str], estimate: float, what: str, elsewhere: str = ARTIFACTS_ELSEWHERE
) -> int:
    """Raise NotEnoughSpace unless `folder`'s filesystem has room for `estimate` bytes (plus margin).
    Returns the bytes asked for. A filesystem that cannot say how much is free is not checked.
    `elsewhere` is how the message tells the user to write it somewhere else."""
    need = needed(estimate)
    free = free_bytes(folder)
    if free is not None and free < need:
        raise NotEnoughSpace(Path(folder), need, free, what, elsewhere)
    return need
