"""Building engines: the emulated parser, builder config, optimization profiles and precision flags."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx

from emulation import engine_file
from trt_emulator.emukit import affine_model, build, logged_error, only, trt


def test_built_engine_round_trips_with_its_profiles_and_io(dev: Any, plan: bytes) -> None:
    t = trt()
    engine = t.Runtime(t.Logger()).deserialize_cuda_engine(plan)
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    assert names == ["x", "s", "y"]
    assert [engine.get_tensor_mode(n) for n in names] == [t.TensorIOMode.INPUT] * 2 + [t.TensorIOMode.OUTPUT]
    assert engine.get_tensor_mode("nope") == t.TensorIOMode.NONE
    assert np.dtype(t.nptype(engine.get_tensor_dtype("y"))) == np.float32
    assert tuple(engine.get_tensor_shape("x")) == (-1, 4)
    assert engine.num_optimization_profiles == 2
    lo, opt, hi = engine.get_tensor_profile_shape("x", 1)
    assert (tuple(lo), tuple(opt), tuple(hi)) == ((3, 4), (4, 4), (4, 4)) and len(lo) == 2 and lo[0] == 3
    assert engine.device_memory_size_v2 % 256 == 0 and engine.device_memory_size_v2 >= 256
    dev.assert_clean()


def test_builder_records_flags_and_fills_the_timing_cache(dev: Any) -> None:
    t = trt()
    builder = t.Builder(t.Logger())
    network = builder.create_network(1 << int(t.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    assert t.OnnxParser(network, t.Logger()).parse(affine_model().SerializeToString())
    assert network.num_inputs == 2 and network.get_input(0).name == "x" and tuple(network.get_input(0).shape) == (-1, 4)
    assert network.num_outputs == 1 and network.get_output(0).dtype == t.DataType.FLOAT
    config = builder.create_builder_config()
    assert config.get_flag(t.BuilderFlag.TF32)  # TensorRT's default
    config.clear_flag(t.BuilderFlag.TF32)
    config.set_memory_pool_limit(t.MemoryPoolType.WORKSPACE, 1 << 30)
    config.builder_optimization_level = 5
    cache = config.create_timing_cache(b"")
    assert config.set_timing_cache(cache, False)
    p = builder.create_optimization_profile()
    p.set_shape("x", (1, 4), (2, 4), (2, 4))
    p.set_shape("s", (1, 1), (2, 1), (2, 1))
    assert [tuple(d) for d in p.get_shape("x")] == [(1, 4), (2, 4), (2, 4)]
    assert config.add_optimization_profile(p) == 0
    data = builder.build_serialized_network(network, config)
    meta, onnx_bytes = engine_file.unpack(bytes(data))
    assert meta["tf32"] is False and meta["strongly_typed"] is True and meta["builder_optimization_level"] == 5
    assert meta["workspace"] == 1 << 30 and meta["tensorrt_version"] == "10.3.0.30" and meta["sm"] == "8.7"
    assert onnx.load_model_from_string(onnx_bytes).graph.name == "affine"
    serialized = bytes(config.get_timing_cache().serialize())
    assert len(config.create_timing_cache(serialized).entries) == 1
    dev.assert_clean()


def test_parse_from_file_reads_external_data(dev: Any, tmp_path: Path) -> None:
    model = affine_model()
    path = tmp_path / "affine.onnx"
    onnx.save_model(model, path, save_as_external_data=True, location="affine.data", size_threshold=0)
    t = trt()
    net = t.Builder(t.Logger()).create_network(0)
    assert t.OnnxParser(net, t.Logger()).parse_from_file(str(path))
    dev.assert_clean()
    net2 = t.Builder(t.Logger()).create_network(0)
    assert not t.OnnxParser(net2, t.Logger()).parse(path.read_bytes())  # external weights, no path
    only(dev, "parser-error")


def test_opset_newer_than_tensorrt_10_3_is_refused(dev: Any) -> None:
    t = trt()
    net = t.Builder(t.Logger(t.Logger.INTERNAL_ERROR)).create_network(0)
    parser = t.OnnxParser(net, t.Logger(t.Logger.INTERNAL_ERROR))
    assert not parser.parse(affine_model(opset=21).SerializeToString())
    assert parser.num_errors == 1 and "opset 21" in parser.get_error(0).desc()
    only(dev, "parser-opset")


def test_unreadable_onnx_is_a_parser_error(dev: Any) -> None:
    t = trt()
    net = t.Builder(t.Logger(t.Logger.INTERNAL_ERROR)).create_network(0)
    assert not t.OnnxParser(net, t.Logger(t.Logger.INTERNAL_ERROR)).parse(b"not an onnx model")
    only(dev, "parser-error")


def test_invalid_profile_shapes_are_refused(dev: Any) -> None:
    t = trt()
    builder = t.Builder(t.Logger(t.Logger.INTERNAL_ERROR))
    p = builder.create_optimization_profile()
    p.set_shape("x", (4, 4), (2, 4), (1, 4))  # min > opt > max
    assert p.get_shape("x") == []
    p.set_shape("s", (1, 1), (2, 1), (2,))  # ranks differ
    assert dev.rules() == ["profile-invalid", "profile-invalid"]
    assert builder.create_builder_config().add_optimization_profile(p) == -1  # nothing valid in it
    assert dev.rules()[-1] == "profile-invalid"


def test_profile_missing_a_dynamic_input_is_refused(dev: Any) -> None:
    assert build(shapes={"x": (4,)}) is None
    only(dev, "build-profile")
    assert logged_error(dev, "no shapes for dynamic input")


def test_profile_contradicting_a_static_dim_is_refused(dev: Any) -> None:
    assert build(shapes={"x": (5,), "s": (1,)}) is None
    only(dev, "build-profile")


def test_no_profile_for_a_dynamic_network_is_refused(dev: Any) -> None:
    assert build(profiles=()) is None
    only(dev, "build-profile")


def test_precision_flags_on_a_strongly_typed_network_are_refused(dev: Any) -> None:
    assert build(flags=("FP16",)) is None
    only(dev, "build-precision-flag")
    dev.reset()
    data = build(strongly_typed=False, flags=("FP16",))  # a weakly typed network may take them
    assert data is not None and engine_file.unpack(bytes(data))[0]["strongly_typed"] is False
    dev.assert_clean()
