"""The runtime's exceptions: one base class so services can answer every user error alike."""

from __future__ import annotations


class F5RTError(Exception):
    """Base class: a problem the caller can fix (bad input, wrong artifacts), not a crash."""


class ManifestError(F5RTError):
    """The artifacts do not match their manifest, or were built for another toolchain or GPU."""


class NoBucketError(F5RTError):
    """A request is larger than every shape bucket the engines were built for."""


class AudioError(F5RTError):
    """Reference audio that is missing, empty, corrupt or in an unsupported format."""


class TextError(F5RTError):
    """Text that cannot be synthesized (empty after normalisation, invalid characters)."""


class BackendUnavailable(F5RTError):
    """A backend whose libraries (onnxruntime, TensorRT, cuda-python, a GPU) are not present."""
