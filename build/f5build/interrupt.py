"""SIGINT and SIGTERM stop a build stage cleanly: an exception unwinds it, the CLI says so and exits.

Python turns SIGINT into KeyboardInterrupt but lets SIGTERM (a CI timeout, `kill`, a container
stop) end the process on the spot. Inside `stop_on_signals()` both raise `Interrupted`, a
BaseException (so no `except Exception` in a stage swallows it) that unwinds through every
`atomic_path` (its temp file is deleted, its target left as it was) and every `with` block, and
the CLI prints one line and exits with 128 + the signal number (130 for SIGINT, 143 for SIGTERM).
A second signal while unwinding is ignored: cleanup finishes. SIGKILL cannot be caught; what it
leaves (a hidden temp file at most) is swept by the next run (`f5build.buildlock`).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(BaseException):
    """The build was asked to stop by a signal."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(signal.Signals(signum).name)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """Within the block, SIGINT / SIGTERM raise `Interrupted` (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    fired: list[int] = []

    def handler(signum: int, frame: FrameType | None) -> None:
        if fired:
            return  # already unwinding: let the cleanup finish
        fired.append(signum)
        raise Interrupted(signum)

    previous = {s: signal.signal(s, handler) for s in SIGNALS}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
