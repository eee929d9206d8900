"""The emulated engine's layers, as IEngineInspector reports them, including TensorRT's MHA fusion decision.

Why the emulator decides fusion on its own: the build's check (f5build.attention_pattern) and its
inspector parsing (f5build.trt_inspect) must be tested against something that is not themselves. This
module applies TensorRT 10.3's documented MHA fusion restrictions (developer guide, "Multi-Head
Attention Fusion"; quoted in NVIDIA/TensorRT#4167), in its own simpler terms: per Softmax, the
producer is a MatMul or an Add of a MatMul; the probabilities are read by exactly one MatMul; both
matmuls take FP16 or BF16; head size 16..256 and a multiple of 8; SM >= 7.5. A fused block becomes one
layer named like the kernel seen on TensorRT 10.3 / Orin (`_gemm_mha_v2_myl0_<k>`), its metadata
listing the block's ONNX nodes; everything else is one layer per ONNX node, as TensorRT reports
unfused layers, with (B, H, N, N) tensors where the scores go through memory.

Verbosity follows TensorRT: an engine built with ProfilingVerbosity.DETAILED reports layers with
inputs, outputs, dimensions, tactic and metadata; LAYER_NAMES_ONLY reports layer names only; NONE an
empty list. Dimensions are concrete when the inspector has an execution context whose input shapes
are all set, else -1 on the dynamic axes (engine-level shapes).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from typing import Any

import onnx
from onnx import TensorProto

_HALF = {TensorProto.FLOAT16, TensorProto.BFLOAT16}
_FORMAT = {
    TensorProto.FLOAT: "Row major linear FP32",
    TensorProto.FLOAT16: "Row major linear FP16 format",
    TensorProto.BFLOAT16: "Row major linear BF16 format",
    TensorProto.BOOL: "Row major linear Bool",
    TensorProto.INT32: "Row major linear Int32",
    TensorProto.INT64: "Row major linear Int64",
    TensorProto.INT8: "Row major linear Int8",
}


def _typed(
    model: onnx.ModelProto, shapes: Mapping[str, tuple[int, ...]] | None
) -> tuple[dict[str, int], dict[str, list[int]]]:
    """elem type and dims (-1 where unknown) of every tensor, at `shapes` when given."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    if shapes:
        for vi in m.graph.input:
            if vi.name in shapes:
                for d, v in zip(vi.type.tensor_type.shape.dim, shapes[vi.name], strict=True):
                    d.ClearField("dim_param")
                    d.dim_value = int(v)
    del m.graph.value_info[:]
    with contextlib.suppress(Exception):  # an emulator that cannot infer shapes still reports the layers
        m = onnx.shape_inference.infer_shapes(m, data_prop=True)
    unknown = any(
        not vi.type.tensor_type.HasField("shape")
        or any(not d.HasField("dim_value") for d in vi.type.tensor_type.shape.dim)
        for vi in m.graph.value_info
    )
    if shapes and unknown:  # shapes through Slice/Concat of Shape outputs: ONNX Runtime's symbolic inference
        from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

        with contextlib.suppress(Exception):
            m = SymbolicShapeInference.infer_shapes(m, auto_merge=True)
    types: dict[str, int] = {}
    dims: dict[str, list[int]] = {}
    for vi in [*m.graph.input, *m.graph.value_info, *m.graph.output]:
        tt = vi.type.tensor_type
        types[vi.name] = tt.elem_type
        if tt.HasField("shape"):
            dims[vi.name] = [d.dim_value if d.HasField("dim_value") else -1 for d in tt.shape.dim]
    for t in m.graph.initializer:
        types[t.name] = t.data_type
        dims[t.name] = list(t.dims)
    return types, dims


def _fusable(sm: onnx.NodeProto, prod: dict[str, onnx.NodeProto], cons: dict[str, list[onnx.NodeProto]],
             types: dict[str, int], dims: dict[str, list[int]], sm_version: tuple[int, int]) -> list[onnx.NodeProto] | None:  # fmt: skip
    """The block's nodes [BMM1, (mask Add), Softmax, BMM2] when TensorRT 10.3 would fuse it, else None."""
    if sm_version < (7, 5):
        return None
    p = prod.get(sm.input[0])
    add = None
    if p is not None and p.op_type == "Add":
        add = p
        p = next((prod[x] for x in p.input if x in prod and prod[x].op_type == "MatMul"), None)
    if p is None or p.op_type != "MatMul":
        return None
    readers = cons.get(sm.output[0], [])
    if len(readers) != 1 or readers[0].op_type != "MatMul":
        return None
    bmm2 = readers[0]
    if not all(types.get(x) in _HALF for x in [*p.input, bmm2.input[1]]):
        return None
    head = (dims.get(p.input[0]) or [-1])[-1]
    if head != -1 and not (16 <= head <= 256 and head % 8 == 0):
        return None
    return [n for n in (p, add, sm, bmm2) if n is not None]


def _io(names: list[str], types: dict[str, int], dims: dict[str, list[int]]) -> list[dict[str, Any]]:
    return [
        {
            "Name": n,
            "Location": "Device",
            "Dimensions": dims.get(n, []),
            "Format/Datatype": _FORMAT.get(types.get(n, 0), "Row major linear FP32"),
        }
        for n in names
        if n
    ]


def layers(
    onnx_bytes: bytes, shapes: Mapping[str, tuple[int, ...]] | None, sm: tuple[int, int]
) -> list[dict[str, Any]]:
    """Every layer of the emulated engine with DETAILED information."""
    model = onnx.load_model_from_string(onnx_bytes)
    types, dims = _typed(model, shapes)
    prod = {o: n for n in model.graph.node for o in n.output}
    cons: dict[str, list[onnx.NodeProto]] = {}
    for n in model.graph.node:
        for i in n.input:
            cons.setdefault(i, []).append(n)
    fused: dict[str, int] = {}  # node name -> fused block index
    blocks: list[list[onnx.NodeProto]] = []
    for n in model.graph.node:
        if n.op_type == "Softmax":
            block = _fusable(n, prod, cons, types, dims, sm)
            if block is not None:
                for b in block:
                    fused[b.name] = len(blocks)
                blocks.append(block)
    out: list[dict[str, Any]] = []
    emitted: set[int] = set()
    for n in model.graph.node:
        if n.op_type == "Constant":
            continue
        k = fused.get(n.name)
        if k is None:
            out.append(
                {
                    "Name": n.name or n.output[0],
                    "LayerType": n.op_type,
                    "Inputs": _io(
                        [i for i in n.input if prod.get(i) is None or prod[i].op_type != "Constant"], types, dims
                    ),
                    "Outputs": _io(list(n.output), types, dims),
                    "TacticName": "",
                    "StreamId": 0,
                    "Metadata": f"[ONNX Layer: {n.name}]",
                }
            )
        elif k not in emitted:
            emitted.add(k)
            b = blocks[k]
            bmm1, bmm2 = b[0], b[-1]
            add = b[1] if len(b) == 4 else None
            ins = [*bmm1.input, *([x for x in add.input if prod.get(x) is not bmm1] if add else []), bmm2.input[1]]
            out.append(
                {
                    "Name": f"_gemm_mha_v2_myl0_{k}",
                    "LayerType": "kgen",
                    "Inputs": _io(ins, types, dims),
                    "Outputs": _io([bmm2.output[0]], types, dims),
                    "TacticName": f"_gemm_mha_v2_0x{k:04x}",
                    "StreamId": 0,
                    "Metadata": "\x1e".join(f"[ONNX Layer: {x.name}]" for x in b),
                }
            )
    return out


def engine_information(meta: Mapping[str, Any], onnx_bytes: bytes, shapes: Mapping[str, tuple[int, ...]] | None,
                       sm: tuple[int, int], fmt: str) -> str:  # fmt: skip
    """IEngineInspector.get_engine_information at the engine's recorded verbosity, JSON or one line per layer."""
    verbosity = str(meta.get("profiling_verbosity", "LAYER_NAMES_ONLY"))
    detailed = layers(onnx_bytes, shapes, sm) if verbosity != "NONE" else []
    bindings = [t["name"] for t in meta.get("io", [])]
    if verbosity == "DETAILED":
        items: list[Any] = detailed
    else:
        items = [x["Name"] for x in detailed]
    if fmt == "JSON":
        return json.dumps({"Layers": items, "Bindings": bindings})
    return "\n".join(x if isinstance(x, str) else f"Name: {x['Name']}, LayerType: {x['LayerType']}" for x in items)


__all__ = ["engine_information", "layers"]
