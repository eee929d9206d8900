"""f5rt: the F5-TTS device runtime.

One small package with a clean public API: numpy + ONNX Runtime everywhere, TensorRT + cuda-python
(one CUDA graph per bucket) where they exist. It never imports torch or f5_tts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["Synthesizer", "SynthesisOptions", "Voice", "load_manifest", "__version__"]

if TYPE_CHECKING:  # pragma: no cover
    from f5rt.manifest import load_manifest
    from f5rt.synthesizer import SynthesisOptions, Synthesizer
    from f5rt.voices import Voice


def __getattr__(name: str) -> Any:
    """Import lazily so `import f5rt` stays cheap (the CLI answers `--help` without numpy work)."""
    if name in ("Synthesizer", "SynthesisOptions"):
        from f5rt import synthesizer

        return getattr(synthesizer, name)
    if name == "Voice":
        from f5rt.voices import Voice

        return Voice
    if name == "load_manifest":
        from f5rt.manifest import load_manifest

        return load_manifest
    raise AttributeError(name)
