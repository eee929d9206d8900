"""OpenMP threads that sleep when they wait: torch's CPU pool on a machine that other jobs share.

torch runs its CPU operators on an OpenMP pool whose idle threads spin at every barrier by default.
That pays only on cores nothing else uses: when another process takes one of the cores the pool runs
on, each parallel section waits for a thread that is not scheduled, and the spinning threads take the
time slices it needs. The DiT's training step (6.3 M parameters, 4 x 250 frames, forward + backward +
AdamW) on a 2-core Xeon, in it/s:

| torch threads | quiet | a quality run on the other core | a busy loop on the other core |
|---|---:|---:|---:|
| 1 | 2.93 | 2.86 | - |
| 2, OpenMP default (spinning) | 4.88-4.96 | 0.11 | 1.69 |
| 2, `GOMP_SPINCOUNT=10000` (a short spin) | 4.80 | - | 1.53 |
| 2, `OMP_WAIT_POLICY=PASSIVE` | 4.53-4.60 | 2.69 | 2.65 |

The whole trainer (batches, signals, saves) ran at 3.33 it/s with spinning and 3.04 it/s passive on
the quiet machine. So every `python -m f5build` process sets `OMP_WAIT_POLICY=PASSIVE` unless the
environment already names a policy: 7-9 % of a quiet machine's speed buys off a slowdown of 1.6- to
25-fold when a quality run, a test suite or a second build shares the box (a shorter spin does not
help). Users who own their cores set `OMP_WAIT_POLICY=ACTIVE`. This is
the policy the runtime already applies to ONNX Runtime's own pool (no spinning by default,
`f5rt.backends.onnxruntime.ThreadPolicy`).

OpenMP reads the variable once, when torch loads it: this must run before `import torch`, which is
why the f5build entry point calls it first and imports no torch itself.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

WAIT_POLICY = "OMP_WAIT_POLICY"


def passive_waits(environ: MutableMapping[str, str] | None = None) -> bool:
    """Set OMP_WAIT_POLICY=PASSIVE in `environ` (default os.environ) unless a policy is already named;
    True when it set it."""
    env = os.environ if environ is None else environ
    if env.get(WAIT_POLICY, "").strip():
        return False
    env[WAIT_POLICY] = "PASSIVE"
    return True
