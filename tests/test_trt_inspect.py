"""Reading attention fusion from a built engine (f5build.trt_inspect) against the emulation's IEngineInspector.

The emulated builder decides MHA fusion by TensorRT 10.3's documented restrictions on its own
(tests/emulation/tensorrt_layers.py), so the parsing is tested against output it does not make
itself: a graph in the pattern is reported fused block by block; an FP32 one, or one with an FP32
softmax section in one block, leaves (B, heads, N, N) tensors and a warning naming the blocks; an
engine built without detailed profiling verbosity says the fusion cannot be read.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

import onnx
import pytest
from onnx import TensorProto, helper
from test_attention_pattern import N, attention_graph

import emulation
from f5build.trt_build import build_engine
from f5build.trt_inspect import attention_fusion, inspect_attention, inspect_shapes

PROFILES = [
    {
        "index": 0,
        "shapes": {
            "x": {"min": [1, N, 128], "opt": [1, N, 128], "max": [1, N, 128]},
            "keep": {"min": [1, N], "opt": [1, N], "max": [1, N]},
        },
    }
]


def engine_for(model: onnx.ModelProto, tmp: Path, detailed: bool = True) -> tuple[Any, Any]:
    """(tensorrt, deserialized engine) of `model`, built by the real build code under emulation."""
    trt = importlib.import_module("tensorrt")
    src, out = tmp / "m.onnx", tmp / "m.engine"
    onnx.save(model, str(src))
    if detailed:
        build_engine(trt, src, out, PROFILES, opt_level=3, workspace_bytes=0, tf32=True, strongly_typed=True,
                     timing_cache=tmp / "cache")  # fmt: skip
    else:  # what an engine built before this check looks like: TensorRT's default verbosity
        builder = trt.Builder(trt.Logger())
        network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
        assert trt.OnnxParser(network, trt.Logger()).parse_from_file(str(src))
        config = builder.create_builder_config()
        p = builder.create_optimization_profile()
        for name, s in PROFILES[0]["shapes"].items():
            p.set_shape(name, s["min"], s["opt"], s["max"])
        config.add_optimization_profile(p)
        out.write_bytes(bytes(builder.build_serialized_network(network, config)))
    engine = trt.Runtime(trt.Logger()).deserialize_cuda_engine(out.read_bytes())
    assert engine is not None
    return trt, engine


@pytest.fixture
def device() -> Any:
    with emulation.installed() as dev:
        yield dev
        dev.assert_clean()


def test_fused_pattern_is_reported_fused_block_by_block(device: Any, tmp_path: Path) -> None:
    trt, engine = engine_for(attention_graph(depth=3), tmp_path)
    fusion = inspect_attention(trt, engine, PROFILES, depth=3, heads=2)
    assert fusion.detailed and fusion.frames == N
    assert fusion.fused_blocks == (0, 1, 2) and len(fusion.mha_layers) == 3
    assert all(name.startswith("_gemm_mha_v2") for name in fusion.mha_layers)
    assert fusion.nn_tensors == () and fusion.all_fused and fusion.warning() is None
    d = fusion.to_dict()
    assert (d["fused"], d["unfused_blocks"], d["all_fused"], d["source"]) == (3, [], True, "IEngineInspector")
    assert "3 of 3 attention blocks run as fused MHA kernels" in fusion.summary()


def test_fp32_attention_is_not_fused_and_the_warning_names_every_block(device: Any, tmp_path: Path) -> None:
    trt, engine = engine_for(attention_graph(elem=TensorProto.FLOAT), tmp_path)
    fusion = inspect_attention(trt, engine, PROFILES, depth=2, heads=2)
    assert fusion.fused_blocks == () and fusion.mha_layers == ()
    assert any("/transformer_blocks.0/attn/MatMul" in t and f"(1, 2, {N}, {N})" in t for t in fusion.nn_tensors)
    w = fusion.warning()
    assert w is not None and "in 2 of 2 blocks (/transformer_blocks.0/attn, /transformer_blocks.1/attn)" in w


def test_one_block_with_an_fp32_softmax_is_named(device: Any, tmp_path: Path) -> None:
    def fp32_softmax(i: int, blk: list[onnx.NodeProto], n: dict[str, str]) -> None:
        if i == 1:
            k = next(j for j, x in enumerate(blk) if x.op_type == "Softmax")
            blk[k : k + 1] = [
                helper.make_node(
                    "Cast", [n["masked"]], ["m32"], to=TensorProto.FLOAT, name="/transformer_blocks.1/attn/Cast"
                ),
                helper.make_node("Softmax", ["m32"], ["p32"], axis=-1, name="/transformer_blocks.1/attn/Softmax"),
                helper.make_node(
                    "Cast", ["p32"], [n["probs"]], to=TensorProto.FLOAT16, name="/transformer_blocks.1/attn/Cast_1"
                ),
            ]

    trt, engine = engine_for(attention_graph(mutate=fp32_softmax), tmp_path)
    fusion = inspect_attention(trt, engine, PROFILES, depth=2, heads=2)
    assert fusion.fused_blocks == (0,) and fusion.unfused_blocks == (1,)
    assert all("transformer_blocks.1" in t for t in fusion.nn_tensors) and fusion.nn_tensors
    w = fusion.warning()
    assert w is not None and "in 1 of 2 blocks (/transformer_blocks.1/attn)" in w
    assert fusion.to_dict()["unfused_blocks"] == ["/transformer_blocks.1/attn"]


def test_engine_without_detailed_verbosity_says_fusion_is_unknown(device: Any, tmp_path: Path) -> None:
    trt, engine = engine_for(attention_graph(), tmp_path, detailed=False)
    fusion = inspect_attention(trt, engine, PROFILES, depth=2, heads=2)
    assert not fusion.detailed and not fusion.all_fused and fusion.layers > 0
    assert "names only" in fusion.summary()
    assert "ProfilingVerbosity.DETAILED" in (fusion.warning() or "")


def test_inspector_dims_are_concrete_only_with_a_context(device: Any, tmp_path: Path) -> None:
    """Without a context the inspector gives engine-level (-1) dims on dynamic axes; with one, concrete dims."""
    m = attention_graph(elem=TensorProto.FLOAT)
    m.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "batch"  # a dynamic axis
    trt, engine = engine_for(m, tmp_path)
    bare = json.loads(engine.create_engine_inspector().get_engine_information(trt.LayerInformationFormat.JSON))
    x_dims = [t["Dimensions"] for layer in bare["Layers"] for t in layer["Inputs"] if t["Name"] == "x"]
    assert x_dims and all(d[0] == -1 for d in x_dims)
    ctx = engine.create_execution_context()
    assert ctx.set_input_shape("x", (1, N, 128)) and ctx.set_input_shape("keep", (1, N))
    inspector = engine.create_engine_inspector()
    inspector.execution_context = ctx
    shaped = json.loads(inspector.get_engine_information(trt.LayerInformationFormat.JSON))
    x_dims = [t["Dimensions"] for layer in shaped["Layers"] for t in layer["Inputs"] if t["Name"] == "x"]
    assert x_dims and all(d == [1, N, 128] for d in x_dims)
    assert inspect_attention(trt, engine, PROFILES, depth=2, heads=2).nn_tensors


def test_parser_rejects_what_is_not_layer_information() -> None:
    with pytest.raises(ValueError, match="not TensorRT's JSON layer list"):
        attention_fusion({"layers": []}, 2, 2, N)
    assert inspect_shapes(PROFILES).frames == N
    # Myelin's flattened (B * heads, N, N) counts as scores too; other square tensors do not
    layer = {"Name": "gemm", "Outputs": [{"Name": "s", "Dimensions": [4, N, N]}, {"Name": "w", "Dimensions": [64, 64]}]}
    assert attention_fusion({"Layers": [layer]}, 1, 2, N).nn_tensors == (f"gemm: s (4, {N}, {N})",)
    assert attention_fusion({"Layers": [layer]}, 1, 2, N, rows=2).nn_tensors == (f"gemm: s (4, {N}, {N})",)
    # an (rows, N, N) activation whose channels happen to equal N (the tiny model's feed-forward at
    # N = 256) is not a score matrix once the rows are known
    ff = {"Name": "ff", "Outputs": [{"Name": "h", "Dimensions": [2, 256, 256]}]}
    assert attention_fusion({"Layers": [ff]}, 1, 2, 256, rows=2).nn_tensors == ()
