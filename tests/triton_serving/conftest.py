"""A real `tritonserver` (from the nvidia-pytriton wheel) on artifacts/tiny/triton, for tests/triton_serving/.

These tests run in their own environment (`nox -s triton`: nvidia-pytriton needs numpy < 2), not in
the main suite (pytest.ini's norecursedirs leaves this folder out of `pytest tests`). Run elsewhere,
every test here is skipped with the reason: no tritonclient, no nvidia-pytriton (or no stub for this
Python), or no repository written yet.

The server is started once per session on free loopback ports (HTTP, gRPC, metrics) over the
repository exactly as `f5build triton` wrote it; the test voices are put into the voices folder its
config names (deterministic files, rewritten only when they differ, so a running server's cached
voices stay valid).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tritonkit import REPOSITORY, config_parameter, ensure_voices, missing_reason, voices_folder


@pytest.fixture(scope="session")
def triton_ready() -> None:
    reason = missing_reason()
    if reason is not None:
        pytest.skip(reason)


@pytest.fixture(scope="session")
def voices(triton_ready: None) -> Path:
    return ensure_voices(voices_folder())


@pytest.fixture(scope="session")
def server(voices: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    from f5rt.triton.local import LocalTritonServer

    with LocalTritonServer(REPOSITORY, tmp_path_factory.mktemp("tritonserver"), stop_timeout=10) as s:
        yield s


@pytest.fixture(scope="session")
def artifacts() -> Path:
    p = Path(config_parameter("f5tts", "artifacts"))
    return p if p.is_absolute() else (REPOSITORY / p).resolve()
