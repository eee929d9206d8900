"""Audio I/O and signal processing for the runtime, numerically equal to what f5-tts does with torch.

f5-tts prepares a voice with torchaudio (load, channel mean, Resample, MelSpectrogram) and pydub
(silence-aware clipping of the reference), and post-processes the output with numpy (cross-fade)
and soundfile (WAV). The device runtime may not import torch, so every step is re-derived here in
numpy from the reference behaviour; tests/test_audio.py pins each function against the original.

All audio here is mono float32 in [-1, 1] (full scale 1.0, so dBFS thresholds mean what they mean
in pydub for 16-bit files). Bad input raises f5rt.errors.AudioError with one line of explanation.

One concept per module (callers import from `f5rt.audio` itself):
    checks      the input checks every function starts with: mono finite float samples, sample rates
    load        load_audio: files, bytes and streams decoded as torchaudio.load + channel mean
    resampling  resample (torchaudio's Resample) and rms (f5-tts' reference volume)
    mel         log_mel (f5-tts MelSpec, vocos flavour) and the model's audio contract
    silence     clip_reference and trim_silence, pydub's silence handling on samples
    fade        CrossFader and cross_fade: f5-tts' chunk join, streamed or at once
    encode      encode_audio and write_wav: 16-bit WAV, FLAC and raw PCM as f5-tts writes them
"""

from __future__ import annotations

from f5rt.audio.checks import MAX_SAMPLE_RATE, MIN_SAMPLE_RATE
from f5rt.audio.encode import encode_audio, write_wav
from f5rt.audio.fade import CrossFader, cross_fade
from f5rt.audio.load import MAX_LOAD_SECONDS, AudioSource, load_audio
from f5rt.audio.mel import HOP_LENGTH, N_FFT, N_MELS, SAMPLE_RATE, WIN_LENGTH, log_mel
from f5rt.audio.resampling import resample, rms
from f5rt.audio.silence import clip_reference, trim_silence

__all__ = [
    "HOP_LENGTH",
    "MAX_LOAD_SECONDS",
    "MAX_SAMPLE_RATE",
    "MIN_SAMPLE_RATE",
    "N_FFT",
    "N_MELS",
    "SAMPLE_RATE",
    "WIN_LENGTH",
    "AudioSource",
    "CrossFader",
    "clip_reference",
    "cross_fade",
    "encode_audio",
    "load_audio",
    "log_mel",
    "resample",
    "rms",
    "trim_silence",
    "write_wav",
]
