"""Error and audio-quality metrics for comparing a reduced-precision variant with FP32.

Tensor metrics (per graph call): max/mean absolute error, relative errors normalised by the
reference's magnitude (pointwise relative error is meaningless where the reference crosses zero),
cosine similarity and SNR.

Audio metrics (per utterance, the FP32 audio is the reference):

* mel SNR: on the runtime's own log-mel (24 kHz, 100 bands, f5-tts' mel), with the reference's
  mean removed, so the number says how much of the log-mel's variation the error is (a plain SNR of
  log-mel is inflated by its large negative offset).
* MCD: mel cepstral distortion, 10/ln10 * sqrt(2 * sum_k (c_k - c'_k)^2) averaged over frames, with
  c_1..c_13 the orthonormal DCT-II of each log-mel frame (c_0, the energy, excluded). This is the
  usual log-mel approximation of MCD, not SPTK's mel-generalised cepstrum: compare figures from
  this module with each other.
* STOI (pystoi) and wide-band PESQ (pesq) at 16 kHz after resampling with the runtime's resampler.
  Both need speech: PESQ raises when its voice activity detector finds no utterance, which is
  reported as None with the reason instead of failing the run.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

EVAL_RATE = 16000
MCD_COEFFS = 13


def tensor_errors(ref: np.ndarray, out: np.ndarray, valid: np.ndarray | None = None) -> dict[str, float]:
    """Errors of `out` against `ref`; `valid` (broadcastable bool) limits them to real frames."""
    r = np.asarray(ref, dtype=np.float64)
    o = np.asarray(out, dtype=np.float64)
    if r.shape != o.shape:
        raise ValueError(f"shape mismatch: reference {r.shape} vs output {o.shape}")
    if valid is not None:
        m = np.broadcast_to(valid, r.shape)
        r, o = r[m], o[m]
    r, o = r.ravel(), o.ravel()
    if not np.all(np.isfinite(o)):
        nan = float("nan")
        return {
            "max_abs": math.inf,
            "mean_abs": math.inf,
            "max_rel": math.inf,
            "mean_rel": math.inf,
            "cosine": nan,
            "snr_db": -math.inf,
            "finite": 0.0,
        }
    d = o - r
    ref_max = float(np.max(np.abs(r))) if r.size else 0.0
    ref_mean = float(np.mean(np.abs(r))) if r.size else 0.0
    err2 = float(np.sum(d * d))
    sig2 = float(np.sum(r * r))
    den = math.sqrt(sig2 * float(np.sum(o * o)))
    return {
        "max_abs": float(np.max(np.abs(d))) if d.size else 0.0,
        "mean_abs": float(np.mean(np.abs(d))) if d.size else 0.0,
        "max_rel": float(np.max(np.abs(d))) / ref_max if ref_max > 0 else 0.0,
        "mean_rel": float(np.mean(np.abs(d))) / ref_mean if ref_mean > 0 else 0.0,
        "cosine": float(np.dot(r, o) / den) if den > 0 else (1.0 if err2 == 0 else 0.0),
        "snr_db": 10 * math.log10(sig2 / err2) if err2 > 0 else math.inf,
        "finite": 1.0,
    }


def _log_mel(audio: np.ndarray) -> np.ndarray:
    from f5rt.audio import log_mel

    return log_mel(np.asarray(audio, dtype=np.float32))


def _aligned(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n = min(a.shape[-1], b.shape[-1])
    return a[..., :n], b[..., :n]


def mel_snr_db(ref: np.ndarray, deg: np.ndarray) -> float:
    """SNR (dB) of the log-mel of `deg` against that of `ref`, reference mean removed."""
    lr, ld = _aligned(_log_mel(ref), _log_mel(deg))
    sig = float(np.sum((lr - lr.mean()) ** 2))
    err = float(np.sum((lr - ld).astype(np.float64) ** 2))
    return 10 * math.log10(sig / err) if err > 0 else math.inf


def _dct_matrix(n: int, k: int) -> np.ndarray:
    """Rows 0..k-1 of the orthonormal DCT-II matrix of size n."""
    i = np.arange(n)[None, :]
    j = np.arange(k)[:, None]
    m = np.cos(np.pi / n * (i + 0.5) * j) * math.sqrt(2.0 / n)
    m[0] /= math.sqrt(2.0)
    return m


def mcd_db(ref: np.ndarray, deg: np.ndarray, coeffs: int = MCD_COEFFS) -> float:
    """Mel cepstral distortion (dB) over aligned frames, c_1..c_coeffs (see the module docstring)."""
    lr, ld = _aligned(_log_mel(ref), _log_mel(deg))
    dct = _dct_matrix(lr.shape[0], coeffs + 1)
    diff = (dct @ (lr - ld).astype(np.float64))[1:]
    per_frame = np.sqrt(2.0 * np.sum(diff * diff, axis=0))
    return float(10.0 / math.log(10.0) * np.mean(per_frame)) if per_frame.size else 0.0


def to_16k(audio: np.ndarray, rate: int) -> np.ndarray:
    from f5rt.audio import resample

    return resample(np.asarray(audio, dtype=np.float32), rate, EVAL_RATE).astype(np.float64)


def stoi(ref: np.ndarray, deg: np.ndarray, rate: int) -> tuple[float | None, str]:
    """(STOI, '') at 16 kHz, or (None, reason) when pystoi is missing or the audio is too short."""
    try:
        from pystoi import stoi as _stoi
    except ImportError:
        return None, "pystoi not installed (pip install pystoi)"
    a, b = _aligned(to_16k(ref, rate), to_16k(deg, rate))
    try:
        return float(_stoi(a, b, EVAL_RATE, extended=False)), ""
    except Exception as e:  # pystoi raises plain exceptions for degenerate input
        return None, f"stoi: {e}"


def pesq_wb(ref: np.ndarray, deg: np.ndarray, rate: int) -> tuple[float | None, str]:
    """(wide-band PESQ MOS-LQO, '') at 16 kHz, or (None, reason)."""
    try:
        from pesq import pesq as _pesq
    except ImportError:
        return None, "pesq not installed (pip install pesq)"
    a, b = _aligned(to_16k(ref, rate), to_16k(deg, rate))
    try:
        return float(_pesq(EVAL_RATE, a, b, "wb")), ""
    except Exception as e:  # NoUtterancesError, BufferTooShortError, ...
        return None, f"pesq: {type(e).__name__}: {e}".strip()


def audio_metrics(ref: np.ndarray, deg: np.ndarray, rate: int) -> dict[str, Any]:
    """Every audio metric of `deg` against `ref` (both mono float at `rate`)."""
    s, s_why = stoi(ref, deg, rate)
    p, p_why = pesq_wb(ref, deg, rate)
    wave = tensor_errors(*_aligned(np.asarray(ref), np.asarray(deg)))
    out: dict[str, Any] = {
        "mel_snr_db": mel_snr_db(ref, deg),
        "mcd_db": mcd_db(ref, deg),
        "stoi": s,
        "pesq": p,
        "wave_snr_db": wave["snr_db"],
        "duration_s": len(deg) / rate,
        "duration_diff_s": abs(len(deg) - len(ref)) / rate,
    }
    notes = [w for w in (s_why, p_why) if w]
    if notes:
        out["notes"] = notes
    return out
