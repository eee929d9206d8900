"""f5build.isa_view: AVX-512 and VNNI hidden from measured processes by CPUID faulting, so that the
AVX2 code paths of ONNX Runtime and PyTorch run (and are timed) natively on a CPU that has more.

What the view claims, each checked: the libraries that choose kernels by CPUID take their AVX2 path
(ONNX Runtime's saturating u8s8 INT8, PyTorch's AVX2 capability); a program's own SIGSEGV handler and
the default crash still work behind it; where the machine cannot make it, it is refused with the reason.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from f5build.bench import BenchOptions, cpu_info, spawn
from f5build.context import ModelSource
from f5build.isa_view import GLIBC_TUNABLES, NATIVE, IsaView, IsaViewUnavailable, cpu_flags

FLAGS = cpu_flags()
NEEDS_VIEW = pytest.mark.skipif(
    not {"cpuid_fault", "avx2"} <= FLAGS, reason="the avx2 view needs CPUID faulting and AVX2 (CPU flag cpuid_fault)"
)
_SEEN = """
import json, torch
from f5build.int8_arithmetic import probe
print(json.dumps({"torch": torch.backends.cpu.get_cpu_capability(), "int8": probe().kind}))
"""


def _seen(view: IsaView) -> dict[str, str]:
    run = subprocess.run([sys.executable, "-c", _SEEN], capture_output=True, text=True, timeout=300,
                         env=view.env(os.environ), check=True)  # fmt: skip
    return dict(json.loads(run.stdout.strip().splitlines()[-1]))


@NEEDS_VIEW
def test_the_avx2_view_sends_onnx_runtime_and_pytorch_down_their_avx2_paths(tmp_path: Path):
    view = IsaView.make("avx2", tmp_path)
    assert _seen(view) == {"torch": "AVX2", "int8": "saturating"}
    native = _seen(NATIVE)
    if "avx512f" in FLAGS:  # the comparison that shows the view changed something
        assert native["torch"].startswith("AVX512")
    if {"avx512_vnni", "avx_vnni"} & FLAGS:
        assert native["int8"] == "exact"
    # the bench's workers see it too, and its report says so
    assert spawn("int8-arithmetic", {}, view)["kind"] == "saturating"
    info = cpu_info(view)
    assert not {"avx512f", "avx512_vnni", "avx_vnni"} & set(info["isa"]) and "avx2" in info["isa"]
    assert "CPUID faulting" in info["isa_view"] and "not an AVX2-only CPU's" in info["isa_view"]
    assert IsaView.make("avx2", tmp_path) == view  # compiled once, by the source's hash


@NEEDS_VIEW
def test_a_program_keeps_its_own_segv_handler_and_its_crash_behind_the_view(tmp_path: Path):
    """Only faulted CPUIDs are answered: a real fault reaches Python's faulthandler, and without a
    handler the process dies of SIGSEGV as it would without the view (it does not hang or go on)."""
    env = IsaView.make("avx2", tmp_path).env(os.environ)
    crash = "import ctypes; ctypes.string_at(0)"
    handled = subprocess.run([sys.executable, "-X", "faulthandler", "-c", crash], capture_output=True, text=True,
                             env=env, timeout=60, check=False)  # fmt: skip
    assert handled.returncode == -11 and "Segmentation fault" in handled.stderr
    bare = subprocess.run([sys.executable, "-c", crash], capture_output=True, env=env, timeout=60, check=False)
    assert bare.returncode == -11


def test_the_view_is_refused_where_the_machine_cannot_make_it(tmp_path: Path):
    with pytest.raises(IsaViewUnavailable, match="needs CPUID faulting .* measure on an AVX2-only CPU instead"):
        IsaView.make("avx2", tmp_path, flags=frozenset({"avx2", "avx512f"}))
    with pytest.raises(IsaViewUnavailable, match="no AVX2"):
        IsaView.make("avx2", tmp_path, flags=frozenset({"cpuid_fault", "sse4_2"}))
    with pytest.raises(ValueError, match="unknown ISA view 'avx512'"):
        IsaView.make("avx512", tmp_path)
    assert not list(tmp_path.iterdir())  # nothing compiled for a refused view
    with pytest.raises(ValueError, match="--bench-isa takes one of native, avx2"):
        BenchOptions(tmp_path, ModelSource("tiny"), isa="avx512")


def test_the_view_adds_to_the_environment_and_native_changes_nothing(tmp_path: Path):
    base = {"LD_PRELOAD": "/opt/other.so", "GLIBC_TUNABLES": "glibc.malloc.arena_max=2", "PATH": "/bin"}
    assert NATIVE.env(base) == base and NATIVE.hides == frozenset()
    view = IsaView("avx2", tmp_path / "lib.so")
    env = view.env(base)
    assert env["LD_PRELOAD"] == f"{tmp_path / 'lib.so'} /opt/other.so"  # ours first: it must trap CPUID first
    assert env["GLIBC_TUNABLES"] == f"glibc.malloc.arena_max=2:{GLIBC_TUNABLES}"
    assert base["LD_PRELOAD"] == "/opt/other.so"  # the caller's mapping is left alone
    assert {"avx512f", "avx512_vnni", "avx_vnni"} <= view.hides and "avx2" not in view.hides
    assert "--bench-isa avx2" in BenchOptions(tmp_path, ModelSource("tiny"), isa="avx2").command()
