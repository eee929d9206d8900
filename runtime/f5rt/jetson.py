"""Is this a Jetson, and are its clocks locked? (Unlocked clocks cost about 40 % RTF on an Orin.)

A Jetson's GPU runs under devfreq DVFS: with the default governor it clocks down between bursts, so
a latency-bound loop like the NFE steps never sees the top clock. `sudo nvpmodel -m 0` (MAXN) and
`sudo jetson_clocks` pin the GPU's minimum frequency to its maximum. `f5rt info` reports it; nothing
here changes a setting. Reads sysfs under `root` (a parameter, so it is tested on any machine).
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

GPU_DEVFREQ_NAMES = ("gpu", "ga10b", "gv11b", "gp10b")  # Orin, Orin (JetPack 5), Xavier, TX2


@dataclass(frozen=True)
class JetsonClocks:
    """What a Jetson says about its GPU clocks and power mode."""

    model: str
    """`/proc/device-tree/model`, e.g. "NVIDIA Jetson AGX Orin Developer Kit"."""
    power_mode: str | None
    """nvpmodel's current mode name ("MAXN", "30W"...), None when nvpmodel is not there."""
    gpu_min_hz: int | None
    gpu_max_hz: int | None
    gpu_top_hz: int | None
    """The highest frequency the GPU offers (available_frequencies), what MAXN + jetson_clocks pin."""

    @property
    def locked(self) -> bool:
        """True when the GPU's minimum clock is pinned to its top clock (jetson_clocks was run)."""
        top = self.gpu_top_hz or self.gpu_max_hz
        return bool(top) and self.gpu_min_hz == top and self.gpu_max_hz == top

    def advice(self) -> str:
        if self.locked and (self.power_mode in (None, "MAXN")):
            return "GPU clocks locked at the top frequency"
        steps = []
        if self.power_mode not in (None, "MAXN"):
            steps.append("`sudo nvpmodel -m 0` (MAXN)")
        if not self.locked:
            steps.append("`sudo jetson_clocks`")
        return f"GPU clocks not locked (power mode {self.power_mode or '?'}): run {' then '.join(steps)}; unlocked clocks cost ~40 % RTF"


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _power_mode() -> str | None:
    exe = shutil.which("nvpmodel")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "-q"], capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    for line in out.splitlines():
        if "Power Mode" in line and ":" in line:
            return line.split(":", 1)[1].strip() or None
    return None


def read_jetson_clocks(root: Path = Path("/"), power_mode: str | None = None) -> JetsonClocks | None:
    """The clock state of this Jetson, or None when this is not a Jetson."""
    try:
        model = (root / "proc/device-tree/model").read_bytes().decode(errors="replace").strip("\0 \n")
    except OSError:
        return None
    if "jetson" not in model.lower() and not (root / "etc/nv_tegra_release").is_file():
        return None
    gpu = None
    devfreq = root / "sys/class/devfreq"
    if devfreq.is_dir():
        for entry in sorted(devfreq.iterdir()):
            if any(name in entry.name for name in GPU_DEVFREQ_NAMES):
                gpu = entry
                break
    lo = hi = top = None
    if gpu is not None:
        lo, hi = _read_int(gpu / "min_freq"), _read_int(gpu / "max_freq")
        try:
            top = max(int(v) for v in (gpu / "available_frequencies").read_text().split())
        except (OSError, ValueError):
            top = None
    mode = power_mode if power_mode is not None else (_power_mode() if root == Path("/") else None)
    return JetsonClocks(model, mode, lo, hi, top)
