"""Runs `f5build` builds as real child processes without paying the imports each time.

Importing the build (torch, onnx, onnxruntime, f5-tts) takes longer than building the tiny model, and
the fault tests run dozens of builds. So one host process imports every stage module once, runs
nothing, and forks one child per build. Each child
is a separate process with its own pid, its stdout/stderr in a log file, `F5BUILD_FAULT` and the other
variables set in its environment, `f5build.cli.main(argv)` as its body and its exit status as the
result: signals sent to it (by itself through f5build.faults, or by a test) act as on any build.

Protocol (JSON lines on stdin/stdout): {"op": "start", "argv": [...], "env": {...}, "log": path,
"fsize": bytes|null} -> {"pid": n}; {"op": "wait", "pid": n, "timeout": s} -> {"status": exit code,
negative for a signal | null on timeout}.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import sys
import time
import traceback

PRELOAD = (
    "onnx",
    "onnxruntime",
    "onnxruntime.quantization",
    "onnx_graphsurgeon",
    "polygraphy.comparator",
    "polygraphy.backend.onnxrt",
    "vocos",
    "soundfile",
    "matplotlib.pyplot",
    "f5rt.synthesizer",
    "f5rt.backends.onnxruntime",
)


def child(req: dict) -> None:
    fd = os.open(req["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGXFSZ):
        signal.signal(s, signal.SIG_DFL)
    if req.get("fsize") is not None:
        # a per-process file size limit: writes past it fail with EFBIG (SIGXFSZ ignored, as a
        # process that handles the error itself would)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (int(req["fsize"]), resource.RLIM_INFINITY))
    os.environ.update(req.get("env") or {})
    rc = 99
    try:
        from f5build.cli import main

        rc = int(main(req["argv"]))
    except SystemExit as e:
        rc = e.code if isinstance(e.code, int) else 2
    except BaseException:
        traceback.print_exc()
        rc = 98
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(rc)


def serve() -> None:
    import f5build.cli as cli

    cli._parser()  # imports every stage module and what they import at module level
    # what the stages import on first use. Native libraries start idle pool threads at import
    # (OpenBLAS, ONNX Runtime); they hold no Python state and the child gets only the forking
    # thread, as with any fork after `import torch` (torch's DataLoader workers do the same).
    import importlib

    from f5build.load import f5_modules

    f5_modules()
    for name in PRELOAD:
        importlib.import_module(name)

    out = sys.stdout
    live: set[int] = set()
    print(json.dumps({"ready": os.getpid()}), file=out, flush=True)
    for line in sys.stdin:
        req = json.loads(line)
        if req["op"] == "start":
            pid = os.fork()
            if pid == 0:
                child(req)
            live.add(pid)
            reply: dict = {"pid": pid}
        elif req["op"] == "wait":
            deadline = time.monotonic() + float(req.get("timeout", 600))
            status = None
            while time.monotonic() < deadline:
                done, st = os.waitpid(req["pid"], os.WNOHANG)
                if done:
                    status = os.waitstatus_to_exitcode(st)
                    live.discard(req["pid"])
                    break
                time.sleep(0.05)
            reply = {"status": status}
        else:
            reply = {"error": f"unknown op {req['op']!r}"}
        print(json.dumps(reply), file=out, flush=True)
    for pid in live:  # a test that failed half-way may leave a child stopped or running: end it
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
    os._exit(0)  # stdin closed: leave without running the imported libraries' exit handlers


if __name__ == "__main__":
    serve()
