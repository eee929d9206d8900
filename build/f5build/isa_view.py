"""What instruction set the measured processes see: the CPU's own, or AVX2 on a CPU that has more.

CPU libraries pick their kernels from the CPUID instruction: ONNX Runtime's MLAS, PyTorch's cpuinfo,
oneDNN and MKL run AVX-512 (and VNNI for INT8) where CPUID reports it, AVX2 + FMA where it does not.
The chat reader's users run on both kinds, and the two paths differ in speed and, for u8 x s8 INT8, in
arithmetic (without VNNI, pairs of products are summed in 16 bits and saturate). To measure the AVX2
path on a machine that has AVX-512, the `avx2` view hides AVX-512, AVX-VNNI and AVX512-BF16 from a
process with Linux's CPUID faulting (`arch_prctl(ARCH_SET_CPUID, 0)`; the CPU flag `cpuid_fault`):
every CPUID the process runs traps into a small preloaded library (`isa_view.c`) that answers with
those feature bits cleared. Everything then runs natively, at full speed, on the AVX2 code path; the
microarchitecture is still the host's, which a report must say (`describe`). An emulator (qemu-user)
gives the same code path 10,000 times slower, too slow to time.

glibc picks its own string functions before any library can trap CPUID, so the view also sets
`GLIBC_TUNABLES` to take AVX-512 out of glibc's choice.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from f5rt.files import atomic_path

ISA_VIEWS = ("native", "avx2")
SOURCE = Path(__file__).with_name("isa_view.c")
# /proc/cpuinfo names of what the avx2 view hides (isa_view.c clears their CPUID bits)
HIDDEN = frozenset(
    (
        *("avx512f", "avx512dq", "avx512ifma", "avx512pf", "avx512er", "avx512cd", "avx512bw", "avx512vl"),
        *("avx512vbmi", "avx512_vbmi2", "avx512_vnni", "avx512_bitalg", "avx512_vpopcntdq", "avx512_4vnniw"),
        *("avx512_4fmaps", "avx512_vp2intersect", "avx512_fp16", "avx_vnni", "avx512_bf16"),
    )
)
GLIBC_TUNABLES = "glibc.cpu.hwcaps=-AVX512F,-AVX512CD,-AVX512BW,-AVX512DQ,-AVX512VL,-AVX512ER,-AVX512PF"


class IsaViewUnavailable(RuntimeError):
    """The view cannot be made on this machine (the message says why and what to do instead)."""


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The kernel's CPU flags (the first processor's), empty where /proc/cpuinfo has none."""
    try:
        with cpuinfo.open(encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


@dataclass(frozen=True)
class IsaView:
    """An instruction-set view for child processes: `native` changes nothing, `avx2` preloads `library`."""

    name: str
    library: Path | None = None

    @classmethod
    def make(cls, name: str, cache: Path, flags: frozenset[str] | None = None) -> IsaView:
        """The view `name`; for `avx2` the preload library is compiled into `cache` once (by its source's
        hash, written atomically). Refused with the reason where the machine cannot make it."""
        if name not in ISA_VIEWS:
            raise ValueError(f"unknown ISA view {name!r}; known: {', '.join(ISA_VIEWS)}")
        if name == "native":
            return cls(name)
        flags = cpu_flags() if flags is None else flags
        if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
            raise IsaViewUnavailable(
                f"the avx2 view needs Linux on x86-64, this is {platform.system()} {platform.machine()}"
            )
        if "cpuid_fault" not in flags:
            raise IsaViewUnavailable(
                "the avx2 view needs CPUID faulting (the kernel's CPU flag cpuid_fault: Intel since Ivy Bridge, "
                "recent AMD EPYCs, a recent kernel and a hypervisor that passes it on), which this machine lacks: "
                "measure on an AVX2-only CPU instead"
            )
        if "avx2" not in flags:
            raise IsaViewUnavailable("this CPU has no AVX2: there is no AVX2 path to show")
        return cls(name, _compiled(cache))

    @property
    def hides(self) -> frozenset[str]:
        return HIDDEN if self.library is not None else frozenset()

    def env(self, base: Mapping[str, str]) -> dict[str, str]:
        """`base` with the view applied: the library first on LD_PRELOAD, AVX-512 out of glibc's choice."""
        env = dict(base)
        if self.library is None:
            return env
        env["LD_PRELOAD"] = " ".join(p for p in (str(self.library), base.get("LD_PRELOAD", "")) if p)
        env["GLIBC_TUNABLES"] = ":".join(p for p in (base.get("GLIBC_TUNABLES", ""), GLIBC_TUNABLES) if p)
        return env

    def describe(self) -> str:
        if self.library is None:
            return "native (the CPU's own instruction set)"
        return (
            "avx2: AVX-512, AVX-VNNI and AVX512-BF16 hidden from the measured processes by CPUID faulting; "
            "they run the AVX2 + FMA code paths natively, on this CPU's cores (not an AVX2-only CPU's "
            "microarchitecture)"
        )


def _compiled(cache: Path) -> Path:
    source = SOURCE.read_bytes()
    lib = cache / f"isa_view_avx2-{hashlib.sha256(source).hexdigest()[:16]}.so"
    if lib.is_file():
        return lib
    cc = shutil.which(os.environ.get("CC", "gcc")) or shutil.which("cc")
    if cc is None:
        raise IsaViewUnavailable("the avx2 view compiles a small C library: install gcc (apt-get install -y gcc)")
    with atomic_path(lib) as tmp:
        proc = subprocess.run(
            [cc, "-O2", "-shared", "-fPIC", "-Wall", "-o", str(tmp), str(SOURCE), "-ldl"],
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        if proc.returncode != 0:
            raise IsaViewUnavailable(f"compiling {SOURCE.name} failed:\n{proc.stderr[-2000:]}")
    return lib


NATIVE = IsaView("native")  # the view that changes nothing
