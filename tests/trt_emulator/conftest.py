"""Fixtures of the emulator's tests: the affine engine (built once per module) and an installed device."""

from __future__ import annotations

from typing import Any

import pytest

import emulation
from trt_emulator.emukit import build


@pytest.fixture(scope="module")
def plan() -> bytes:
    """The affine engine, built once under the default emulated machine."""
    with emulation.installed():
        data = build()
    assert data is not None
    return bytes(data)


@pytest.fixture
def dev() -> Any:
    with emulation.installed() as device:
        yield device
