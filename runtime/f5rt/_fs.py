"""Former name of `f5rt.files` (atomic writes and hashes), kept so existing imports work: use `f5rt.files`."""

from f5rt.files import (  # noqa: F401
    atomic_open,
    atomic_path,
    atomic_write_bytes,
    atomic_write_json,
    sha256_bytes,
    sha256_file,
    sha256_json,
)
