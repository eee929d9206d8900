"""Full disks and refused writes: a stage fails at once with one line naming the file (or folder),
what the system said and the free space, and the artifacts that were there still verify.

- ENOSPC: a real size-limited tmpfs (a private mount namespace: `unshare -Urm`, no root needed where
  user namespaces are enabled): once when the free-space estimate refuses the stage up front, once
  when a write runs out of space half-way.
- EFBIG: RLIMIT_FSIZE, a real kernel limit on the size of any file the build writes.
- EROFS: the artifacts folder bind-mounted read-only.
- EIO: no disk here can be made to fail, so f5build.faults makes the final fsync/rename of the named
  file raise OSError(EIO), the error a failing disk gives there.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from faults.faultkit import COMPILE, ENV, ROOT, common, leftovers, manifest_hashes


def _userns_mounts() -> str | None:
    """None when `unshare -Urm` may mount a tmpfs here, else why not."""
    if shutil.which("unshare") is None:
        return "no unshare(1)"
    probe = subprocess.run(
        [
            "unshare",
            "-Urm",
            "sh",
            "-c",
            "mount -t tmpfs -o size=64k tmpfs /mnt 2>&1 || mount -t tmpfs -o size=64k tmpfs /tmp",
        ],
        capture_output=True,
        text=True,
    )
    return None if probe.returncode == 0 else f"cannot mount in a user namespace: {probe.stdout or probe.stderr}"


NO_MOUNTS = _userns_mounts()
needs_mounts = pytest.mark.skipif(NO_MOUNTS is not None, reason=f"size-limited / read-only mounts: {NO_MOUNTS}")


def in_namespace(script: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run a shell script in a private mount namespace (its mounts vanish with it)."""
    return subprocess.run(
        ["unshare", "-Urm", "sh", "-euc", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        env=ENV,
        cwd=ROOT,
        timeout=timeout,
    )


F5RT = "import sys; from f5rt.cli import main; sys.exit(main(sys.argv[1:]))"  # the `f5rt` command


def du(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


@needs_mounts
def test_full_disk(tmp_path, reference):
    """A tmpfs holding a built folder and little else: quantize's estimate refuses it before any
    work; with the disk then filled to its last page, triton's repository write fails half-way.
    Both name the file or folder and the free space; the folder still verifies with `f5rt info`
    afterwards (run inside the same mount)."""
    src = tmp_path / "src" / "tiny"
    shutil.copytree(reference, src)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    art = mnt / "tiny"
    size_kb = du(src) // 1024 + 2048  # the folder plus 2 MB: less than a variant needs
    py = sys.executable
    # leaves one 4 kB page: room for the lock record, none for the repository's files
    fill = (
        f"import os; s = os.statvfs('{mnt}'); open('{mnt}/filler', 'wb').write(bytes(s.f_bavail * s.f_frsize - 4096))"
    )
    r = in_namespace(
        f"""
        mount -t tmpfs -o size={size_kb}k tmpfs {mnt}
        cp -a {src} {art}
        set +e
        {py} -m f5build quantize {" ".join(common(art))} --quant-force --quant-graphs step \
             --quant-variants cpu-fp32 2>{tmp_path}/quantize.err; echo "quantize rc=$?"
        {py} -c "{fill}"
        {py} -m f5build triton {" ".join(common(art))} 2>{tmp_path}/triton.err; echo "triton rc=$?"
        rm -f {mnt}/filler
        {py} -c "{F5RT}" info --artifacts {art} > {tmp_path}/info.out 2>&1; echo "info rc=$?"
        find {art} -name '.*' > {tmp_path}/hidden.out
        """
    )
    assert r.returncode == 0, r.stderr
    quantize_err = (tmp_path / "quantize.err").read_text().strip()
    assert "quantize rc=74" in r.stdout, (r.stdout, quantize_err)
    assert quantize_err.count("\n") == 0 and "Traceback" not in quantize_err, quantize_err
    assert f"{art}: step.cpu-fp32.onnx" in quantize_err and "needs about" in quantize_err
    assert "is free there" in quantize_err and "--artifacts-root" in quantize_err

    triton_err = (tmp_path / "triton.err").read_text().strip()
    assert "triton rc=74" in r.stdout, (r.stdout, triton_err)
    assert triton_err.count("\n") == 0 and "Traceback" not in triton_err, triton_err
    assert "No space left on device" in triton_err and f"{art / 'triton'}" in triton_err
    assert "free on its filesystem" in triton_err

    info = (tmp_path / "info.out").read_text()
    assert "info rc=0" in r.stdout and "all present and matching their sha256" in info, info
    assert (tmp_path / "hidden.out").read_text().split() == [], "a temp file was left behind"


@needs_mounts
def test_read_only_artifacts_folder(tmp_path, reference):
    root = tmp_path / "art" / "tiny"
    shutil.copytree(reference, root)
    before = manifest_hashes(root)
    py = sys.executable
    r = in_namespace(
        f"""
        mount --bind {root} {root}
        mount -o remount,ro,bind {root}
        set +e
        {py} -m f5build triton {" ".join(common(root))} 2>{tmp_path}/triton.err; echo "triton rc=$?"
        """
    )
    err = (tmp_path / "triton.err").read_text().strip()
    assert "triton rc=74" in r.stdout, (r.stdout, r.stderr, err)
    assert err.count("\n") == 0 and "Read-only file system" in err and str(root) in err
    assert "read-only filesystem" in err
    assert manifest_hashes(root) == before and leftovers(root) == []


def test_file_size_limit(host, tmp_path, reference):
    """RLIMIT_FSIZE of 1 MB: the text encoder graph (2.8 MB) cannot be written; the message names it
    and how much was written; the previous export (same folder, --force) still verifies."""
    root = tmp_path / "tiny"
    shutil.copytree(reference, root)
    before = manifest_hashes(root)
    r = host.run(["export", *common(root), "--force"], fsize=1_000_000)
    assert r.status == 74, r.log[-2000:]
    err = [ln for ln in r.lines if ln.startswith("f5build export: error:")]
    assert len(err) == 1 and "Traceback" not in r.log
    assert f"{root / 'text_encoder.onnx'}: cannot write it (File too large)" in err[0]
    assert "of it were written before the error" in err[0] and "free on its filesystem" in err[0]
    assert manifest_hashes(root) == before and leftovers(root) == []


def test_io_error(host, tmp_path, reference):
    root = tmp_path / "tiny"
    shutil.copytree(reference, root)
    before = manifest_hashes(root)
    r = host.run(["compile", *common(root), *COMPILE], "EIO@build_plan.json")
    assert r.status == 74, r.log[-2000:]
    err = [ln for ln in r.lines if ln.startswith("f5build compile: error:")]
    assert len(err) == 1 and "Traceback" not in r.log
    assert f"{root / 'engines' / 'build_plan.json'}: cannot write it (Input/output error)" in err[0]
    assert "check the disk" in err[0]
    assert manifest_hashes(root) == before and leftovers(root) == []
