"""Deserializing engines: another TensorRT release or GPU, foreign bytes, and the engine inspector."""

from __future__ import annotations

import json
from typing import Any

import pytest

import emulation
from emulation import EmulatorConfig
from trt_emulator.emukit import logged_error, only, trt


@pytest.mark.parametrize(
    ("config", "rule"),
    [(EmulatorConfig(tensorrt_version="10.4.0.26"), "engine-version"), (EmulatorConfig(sm=(8, 6)), "engine-sm")],
)
def test_engine_for_another_tensorrt_or_sm_is_refused(plan: bytes, config: EmulatorConfig, rule: str) -> None:
    with emulation.installed(config) as device:
        t = trt()
        assert t.Runtime(t.Logger(t.Logger.INTERNAL_ERROR)).deserialize_cuda_engine(plan) is None
        only(device, rule)
        assert logged_error(device, "rebuild")


def test_engine_inspector_refuses_a_foreign_context_and_a_bad_layer_index(dev: Any, plan: bytes) -> None:
    t = trt()
    runtime = t.Runtime(t.Logger(t.Logger.INTERNAL_ERROR))
    engine, other = runtime.deserialize_cuda_engine(plan), runtime.deserialize_cuda_engine(plan)
    inspector = engine.create_engine_inspector()
    inspector.execution_context = other.create_execution_context()
    only(dev, "inspector-context")
    assert inspector.execution_context is None and logged_error(dev, "IEngineInspector::setExecutionContext")
    dev.reset()
    inspector.execution_context = engine.create_execution_context()  # its own: accepted
    layers = json.loads(inspector.get_engine_information(t.LayerInformationFormat.JSON))["Layers"]
    assert len(layers) == 2 and all(isinstance(x, str) for x in layers)  # default verbosity: names only
    assert inspector.get_layer_information(5, t.LayerInformationFormat.ONELINE) == ""
    only(dev, "inspector-index")
    with pytest.raises(TypeError):  # the pybind11 enum refuses plain ints
        inspector.get_engine_information(1)


def test_engine_of_the_same_release_with_another_build_number_loads(plan: bytes) -> None:
    with emulation.installed(EmulatorConfig(tensorrt_version="10.3.0.26")) as device:
        assert trt().Runtime(trt().Logger()).deserialize_cuda_engine(plan) is not None
        device.assert_clean()


def test_bytes_that_are_no_engine_are_refused(dev: Any) -> None:
    t = trt()
    assert t.Runtime(t.Logger(t.Logger.INTERNAL_ERROR)).deserialize_cuda_engine(b"\x00" * 64) is None
    only(dev, "engine-format")
