"""Where the DiT trains: the CPU (the default, what these recipes are sized for) or a CUDA GPU.

The recipe is the same on both (same batches, losses, schedule and EMA); a GPU only runs more steps
per hour. Results are not bitwise equal across devices (other kernels, other random streams), so a
GPU-trained release reproduces on the CPU as the same recipe trained more slowly, not as the same
bits. Alignment signals and evaluation always run on the CPU, as the runtime's users would.
"""

from __future__ import annotations

import copy
import time

import torch


def resolve_device(name: str) -> torch.device:
    """`cpu` or `cuda[:N]`; a GPU asked for and not present is an error that says so, not a silent CPU run."""
    dev = torch.device(name)
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"--train-device: expected cpu or cuda[:N], got {name!r}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"--train-device {name}: no CUDA GPU is visible to torch (torch {torch.__version__}, "
            f"built for CUDA {torch.version.cuda}); train on the CPU or install a CUDA build of torch"
        )
    return dev


def step_clock(device: torch.device) -> float:
    """CPU time on the CPU (what a shared 2-core box spends), wall time after a sync on a GPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        return time.perf_counter()
    return time.process_time()


def on_cpu(module: torch.nn.Module) -> torch.nn.Module:
    """`module` itself when it is on the CPU, else a CPU copy (for the signals and evaluation)."""
    param = next(module.parameters(), None)
    if param is None or param.device.type == "cpu":
        return module
    return copy.deepcopy(module).cpu()
