"""The runtime's exceptions, each carrying the HTTP answer a service gives for it.

One base class so services can answer every user error alike, and the status on the class itself
(`http_status`, `code`, `retry_after`) so the server maps an exception by what it *is* instead of a
chain of isinstance checks that has to be kept in step with this file. A new error type picks its
status here, next to its meaning.
"""

from __future__ import annotations


class F5RTError(Exception):
    """Base class: a problem the caller can fix (bad input, wrong artifacts), not a crash.

    http_status / code: how `f5rt serve` answers it; retry_after: seconds for a Retry-After header
    (capacity errors only), None for none.
    """

    http_status = 500
    code = "engine_error"
    retry_after: int | None = None

    def http_headers(self) -> dict[str, str]:
        return {} if self.retry_after is None else {"Retry-After": str(self.retry_after)}


class ManifestError(F5RTError):
    """The artifacts do not match their manifest, or were built for another toolchain or GPU."""


class NoBucketError(F5RTError):
    """A request is larger than every shape bucket the engines were built for."""

    http_status, code = 422, "text_too_long"


class AudioError(F5RTError):
    """Reference audio that is missing, empty, corrupt or in an unsupported format."""

    http_status, code = 422, "invalid_audio"


class TextError(F5RTError):
    """Text that cannot be synthesized (empty after normalisation, invalid characters)."""

    http_status, code = 422, "invalid_text"


class BackendUnavailable(F5RTError):
    """A backend whose libraries (onnxruntime, TensorRT, cuda-python, a GPU) are not present."""


class EncoderUnavailable(F5RTError):
    """An output format whose encoder library is not installed; the message names the extra to install.

    A 400, not a 5xx: clients (the openai SDK among them) retry 5xx answers, and asking again cannot
    help until the server is reinstalled; another response_format works at once.
    """

    http_status, code = 400, "format_unavailable"


class Overloaded(F5RTError):
    """Too many requests admitted; retry after `retry_after` seconds."""

    http_status, code = 503, "overloaded"

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"server busy: too many requests in flight, retry after {retry_after} s")
        self.retry_after = retry_after


class RequestTimeout(F5RTError, TimeoutError):
    """A request waited longer than the request timeout before it could run."""

    http_status, code = 504, "timeout"


class ShuttingDown(F5RTError):
    """The batcher stopped before the request ran (shutdown, or a failed warm-up)."""

    http_status, code, retry_after = 503, "unavailable", 5
