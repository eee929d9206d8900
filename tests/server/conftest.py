"""Fixtures of the server's tests: the tiny model's Synthesizer (built once per module), a private voices
folder, and a warmed-up app with its TestClient (helpers in serverkit.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from f5rt.synthesizer import Synthesizer

if TYPE_CHECKING:
    from starlette.testclient import TestClient

# serverkit needs fastapi and httpx, which the test modules importorskip: imported where used, so that
# without them the package's tests are skipped rather than its conftest failing to import.


@pytest.fixture(scope="module")
def synth(tiny_artifacts: Path) -> Iterator[Synthesizer]:
    s = Synthesizer(tiny_artifacts, backend="onnxruntime", threads=1)
    yield s
    s.close()


@pytest.fixture
def voices(voices_dir: Path, tmp_path: Path) -> Path:
    from server.serverkit import make_voices

    return make_voices(voices_dir, tmp_path / "voices")


@pytest.fixture
def server(synth: Synthesizer, voices: Path) -> Iterator[tuple[TestClient, Any]]:
    from server.serverkit import serving

    with serving(synth, voices) as s:
        yield s
