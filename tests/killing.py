"""Kill a run the way the OOM killer or a closed session does: a child process that SIGKILLs itself at a
chosen call, so a test can check what the next run makes of what it left.

    r = run_killed(\"""
    import f5build.train.corpus as corpus
    corpus.speak = dying(corpus.speak, 8)       # the 8th utterance spoken kills the process
    corpus.make_corpus(...)
    \""")
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

TESTS = Path(__file__).resolve().parent


def dying(
    fn: Callable[..., Any],
    n: int,
    counts: Callable[..., bool] = lambda *a: True,
    last_words: Callable[..., None] = lambda *a: None,
) -> Callable[..., Any]:
    """`fn`, except that the n-th call `counts` accepts runs `last_words` on its arguments and then
    SIGKILLs the process before `fn` runs."""
    calls = 0

    def wrapper(*args: Any) -> Any:
        nonlocal calls
        if counts(*args):
            calls += 1
            if calls == n:
                last_words(*args)
                os.kill(os.getpid(), signal.SIGKILL)
        return fn(*args)

    return wrapper


def run_killed(script: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run `script` in a child Python with the tests folder importable (`from killing import dying`);
    it must end killed by SIGKILL."""
    head = f"import sys\nsys.path[:0] = [{str(TESTS)!r}]\nfrom pathlib import Path\nfrom killing import dying\n"
    r = subprocess.run([sys.executable, "-c", head + textwrap.dedent(script)], capture_output=True, text=True,
                       timeout=timeout)  # fmt: skip
    assert r.returncode == -signal.SIGKILL, r.stderr[-2000:]
    return r
