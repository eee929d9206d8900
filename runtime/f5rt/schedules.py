"""Time schedules of the flow-matching ODE, as f5-tts builds them.

f5-tts (CFM.sample, use_epss=True by default) uses Empirically Pruned Step Sampling for the NFE counts
it has tables for and a uniform grid otherwise, then applies sway sampling on top:
``t + sway * (cos(pi/2 * t) - 1 + t)``. Computed in float32 like f5-tts' default dtype.
"""

from __future__ import annotations

import numpy as np

# Step boundaries in 1/32 units, per NFE (f5-tts' get_epss_timesteps).
EPSS_TABLE: dict[int, tuple[int, ...]] = {
    5: (0, 2, 4, 8, 16, 32),
    6: (0, 2, 4, 6, 8, 16, 32),
    7: (0, 2, 4, 6, 8, 16, 24, 32),
    10: (0, 2, 4, 6, 8, 12, 16, 20, 24, 28, 32),
    12: (0, 2, 4, 6, 8, 10, 12, 14, 16, 20, 24, 28, 32),
    16: (0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 14, 16, 20, 24, 28, 32),
}


def timesteps(nfe: int, sway: float | None = -1.0, use_epss: bool = True) -> np.ndarray:
    """The nfe + 1 time points t_0 = 0 … t_nfe = 1 (float32), as f5-tts samples them."""
    if not isinstance(nfe, (int, np.integer)) or isinstance(nfe, bool) or nfe < 1:
        raise ValueError(f"nfe must be a positive integer, got {nfe!r}")
    if use_epss and nfe in EPSS_TABLE:
        t = np.float32(1 / 32) * np.asarray(EPSS_TABLE[nfe], dtype=np.float32)
    else:
        t = np.linspace(0.0, 1.0, nfe + 1, dtype=np.float32)
    if sway is not None:
        s = np.float32(sway)
        t = (t + s * (np.cos(np.float32(np.pi / 2) * t) - 1 + t)).astype(np.float32)
    return t.astype(np.float32)


def steps(nfe: int, sway: float | None = -1.0, use_epss: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(t_k, dt_k) for k = 0 … nfe-1: the Euler steps x += dt_k * v(t_k, x)."""
    t = timesteps(nfe, sway, use_epss)
    return t[:-1].copy(), (t[1:] - t[:-1]).astype(np.float32)


def solver_steps(
    nfe: int, sway: float | None = -1.0, use_epss: bool = True, solver: str = "euler"
) -> tuple[np.ndarray, np.ndarray]:
    """(t_k, dt_k) of the solver's steps for `nfe` step-graph calls.

    Euler: f5-tts' schedule, one call per step. Midpoint: nfe / 2 steps on the same kind of grid (two
    calls each), so both spend the same graph calls; EPSS tables are Euler's, so midpoint steps on a
    uniform grid with sway.
    """
    if solver == "euler":
        return steps(nfe, sway, use_epss)
    if solver == "midpoint":
        if nfe % 2:
            raise ValueError(f"the midpoint solver needs an even nfe (two calls per step), got {nfe}")
        return steps(nfe // 2, sway, use_epss=False)
    raise ValueError(f"unknown solver {solver!r} (euler or midpoint)")
