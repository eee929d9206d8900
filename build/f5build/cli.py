"""`python -m f5build <stage>`: one entry point for every stage, as the nox sessions call it.

Each stage module exposes `add_arguments(parser)`, an options dataclass `Options` with
`from_args(args)`, and `run(options) -> int`: this module is the only place an argparse Namespace is
read, so the stages' library code takes typed options and can be called without a command line.
(A stage module without `Options` still gets `run(args)`.) Arguments shared by every stage (which
model, where its artifacts go, the bucket table) are added once by `add_common`; those several stages
take under their own prefix (recipe, corpus, voices, threads, reports, force) by `add_shared`; both
live in `f5build.context`, which the stages import (they never import this module back).

A run holds the artifacts folder's lock (`f5build.buildlock`) from start to end, so two builds never
write one folder at once (a stage that writes elsewhere names its folder with `lock_folder(args)`:
`train` locks its training state); SIGINT / SIGTERM stop it cleanly (`f5build.interrupt`); every failure is
one line on stderr and an exit code: 2 bad input, 74 a write the disk refused, 75 the folder busy,
130 / 143 stopped by SIGINT / SIGTERM (docs/build-faults.md).
"""

from __future__ import annotations

import argparse
import errno
import importlib
import sys
import time
from contextlib import nullcontext
from pathlib import Path

from f5build import faults
from f5build.buildlock import BuildLock, LockBusy, describe
from f5build.context import add_common, artifacts_dir
from f5build.interrupt import Interrupted, stop_on_signals
from f5build.openmp import passive_waits
from f5build.space import NotEnoughSpace
from f5rt.errors import F5RTError
from f5rt.files import WriteError, format_bytes, free_bytes

STAGES: dict[str, str] = {
    "export": "f5build.export",
    "calibrate": "f5build.calibrate",
    "quantize": "f5build.quantize",
    "compile": "f5build.compile",
    "validate": "f5build.validate",
    "bench": "f5build.bench",
    "cost": "f5build.cost",
    "triton": "f5build.triton",
    "train": "f5build.train",
    "quality": "f5build.quality",
}
# Exit codes besides 0 (done) and 1 (a stage's own verdict, e.g. a failed gate).
EXIT_INPUT = 2  # bad input or options: the message names the file and the problem
EXIT_DISK = 74  # the disk refused a write (full, read-only, I/O error): the message names the file
EXIT_BUSY = 75  # another build holds this artifacts folder's lock
# 128 + signal number (130 SIGINT, 143 SIGTERM): stopped by a signal, nothing half-written kept
PIPELINE = ("export", "calibrate", "quantize", "compile", "validate", "quality", "cost", "triton")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="f5build", description=__doc__)
    sub = parser.add_subparsers(dest="stage", required=True)
    for stage, module in STAGES.items():
        mod = importlib.import_module(module)
        p = sub.add_parser(stage, help=(mod.__doc__ or "").strip().splitlines()[0])
        add_common(p)
        mod.add_arguments(p)
    p = sub.add_parser("pipeline", help="every stage in order: " + " -> ".join(PIPELINE))
    add_common(p)
    for stage in PIPELINE:
        importlib.import_module(STAGES[stage]).add_arguments(p)
    return parser


def _disk_error(e: OSError) -> str:
    """One line for an OSError about the disk: the file, what the system said, the space left there."""
    if isinstance(e, (WriteError, NotEnoughSpace)):
        return str(e)
    where = e.filename or "?"
    msg = f"{where}: {e.strerror or e}"
    if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG) and e.filename:
        free = free_bytes(Path(e.filename).parent)
        if free is not None:
            msg += f"; {format_bytes(free)} free there: free space and rerun"
    elif e.errno == errno.EROFS:
        msg += "; the folder is on a read-only filesystem: write the artifacts elsewhere or remount it"
    return msg


def _run_stage(stage: str, args: argparse.Namespace) -> int:
    """One stage, its failures turned into exit codes (see EXIT_*) and one line on stderr."""
    t0 = time.perf_counter()
    mod = importlib.import_module(STAGES[stage])
    print(f"== f5build {stage} ({getattr(mod, 'working_folder', artifacts_dir)(args)})", flush=True)
    faults.at_stage(stage)
    try:
        options = getattr(mod, "Options", None)
        rc = mod.run(options.from_args(args) if options is not None else args)
    except (F5RTError, FileNotFoundError, ValueError) as e:
        print(f"f5build {stage}: error: {e}", file=sys.stderr)
        return EXIT_INPUT
    except OSError as e:
        print(f"f5build {stage}: error: {_disk_error(e)}", file=sys.stderr)
        return EXIT_DISK
    print(
        f"== f5build {stage}: {'ok' if rc == 0 else f'failed ({rc})'} in {time.perf_counter() - t0:.1f} s",
        flush=True,
    )
    return int(rc)


def _lock_folder(args: argparse.Namespace) -> Path | None:
    """The folder a run writes and locks: the artifacts folder, unless the stage module names its own
    (`lock_folder(args)`, e.g. the training state for `train`; None for a run that only reads)."""
    named = getattr(importlib.import_module(STAGES[args.stage]), "lock_folder", None) if args.stage in STAGES else None
    return artifacts_dir(args) if named is None else named(args)


def _run_stages(stages: tuple[str, ...], args: argparse.Namespace) -> int:
    for stage in stages:
        rc = _run_stage(stage, args)
        if rc != 0:
            return rc
    return 0


def main(argv: list[str] | None = None) -> int:
    passive_waits()  # before any stage imports torch (f5build.openmp)
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    stages = PIPELINE if args.stage == "pipeline" else (args.stage,)
    root = _lock_folder(args)
    faults.install()
    stage = stages[0]
    # a stage that only reads (f5build.train's plot and evaluate parts) takes no lock
    held = nullcontext(None) if root is None else BuildLock(root, float(args.lock_wait), "f5build " + " ".join(argv))
    try:
        with stop_on_signals(), held as lock:
            if lock is not None and lock.took_over:
                print(
                    f"f5build: taking over the lock of {describe(lock.took_over)}, which ended without "
                    f"releasing it; removed {len(lock.swept)} file(s) it left half-written",
                    file=sys.stderr,
                    flush=True,
                )
            return _run_stages(stages, args)
    except LockBusy as e:
        print(f"f5build {stage}: refused: {e}", file=sys.stderr)
        return EXIT_BUSY
    except Interrupted as e:
        print(
            f"f5build {stage}: stopped by {e}; files it had not finished were discarded and the manifest "
            "records only complete ones: rerun the same command to continue",
            file=sys.stderr,
            flush=True,
        )
        return e.exit_code
    except OSError as e:  # the lock file itself could not be made (read-only or full artifacts root)
        print(f"f5build {stage}: error: {_disk_error(e)}", file=sys.stderr)
        return EXIT_DISK
    return 0
