"""Two builds on one artifacts folder: the second is refused (or waits with --lock-wait) while the
first runs, never interleaving writes; a lock left by a killed build is taken over with a message."""

from __future__ import annotations

import json
import os
import shutil
import signal

import pytest

from f5build.buildlock import BuildLock, LockBusy, lock_path
from faults.faultkit import common, lock_held_elsewhere, manifest_hashes, wait_stopped


def test_second_build_is_refused_then_waits_then_takes_over_a_dead_holder(host, tmp_path, tiny_artifacts):
    root = tmp_path / "tiny"
    shutil.copytree(tiny_artifacts, root)
    argv = ["export", *common(root)]
    # the first build stops itself as its stage starts, holding the lock
    first, first_log = host.start(argv, "SIGSTOP@stage:export")
    wait_stopped(first)
    holder = json.loads(lock_path(root).read_text())
    assert holder["pid"] == first and holder["started"] > 0 and "export" in holder["command"]

    r = host.run(argv)
    assert r.status == 75, r.log
    assert f"pid {first}" in r.log and "another build is running" in r.log and "--lock-wait" in r.log
    assert "Traceback" not in r.log

    # with --lock-wait the second build waits: it starts once the first has finished
    second, second_log = host.start([*argv, "--lock-wait", "300"])
    os.kill(first, signal.SIGCONT)
    assert host.wait(first, first_log).status == 0
    r2 = host.wait(second, second_log)
    assert r2.status == 0, r2.log
    assert "up to date" in r2.log and "taking over" not in r2.log
    assert not lock_path(root).exists(), "a finished build removes its lock file"

    # a holder killed with SIGKILL cannot release anything: the next build takes its lock over
    third, third_log = host.start(argv, "SIGSTOP@stage:export")
    wait_stopped(third)
    os.kill(third, signal.SIGKILL)
    assert host.wait(third, third_log).status == -9
    assert json.loads(lock_path(root).read_text())["pid"] == third
    r3 = host.run(argv)
    assert r3.status == 0, r3.log
    assert f"taking over the lock of pid {third}" in r3.log and "ended without releasing it" in r3.log
    assert manifest_hashes(root) == manifest_hashes(tiny_artifacts)


def test_lock_in_process_is_reentrant_and_refuses_while_held_elsewhere(tmp_path):
    root = tmp_path / "art" / "tiny"
    with BuildLock(root) as outer, BuildLock(root) as inner:  # a stage inside `pipeline`
        assert outer.took_over is None and inner is not None
        assert json.loads(lock_path(root).read_text())["pid"] == os.getpid()
    assert not lock_path(root).exists() and not root.parent.exists(), "the folders made for the lock are gone"
    # a lock record naming a process that is gone (flock free): taken over, the record reported
    root.mkdir(parents=True)
    lock_path(root).write_text(json.dumps({"pid": 999999, "host": "h", "started": 1.0, "command": "f5build x"}))
    (root / ".step.onnx.abc123.tmp").write_bytes(b"half")
    (root / ".quant-step-int8-xyz").mkdir()
    with BuildLock(root) as lock:
        assert lock.took_over["pid"] == 999999
        assert sorted(p.name for p in lock.swept) == [".quant-step-int8-xyz", ".step.onnx.abc123.tmp"]
    assert sorted(p.name for p in root.iterdir()) == []


def test_lock_busy_names_the_holder(tmp_path):
    """A live holder in another process: refused at once, and after a bounded wait."""
    root = tmp_path / "tiny"
    with lock_held_elsewhere(root) as pid:
        with pytest.raises(LockBusy, match=f"pid {pid}"):
            BuildLock(root).acquire()
        with pytest.raises(LockBusy, match="after waiting"):
            BuildLock(root, wait_s=0.5).acquire()
    with BuildLock(root) as lock:  # the holder died: its lock is free and reported as taken over
        assert lock.took_over["pid"] == pid
