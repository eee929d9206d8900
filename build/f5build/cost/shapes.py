"""Concrete tensor shapes of an ONNX graph at given input shapes, without its weight data.

`skeleton` drops the weight data (big initializers become typed graph inputs, so every shape stays
exact and a 1.3 GB graph costs a few MB); `resolve_shapes` fixes the symbolic input dims, then runs
`onnx.shape_inference.infer_shapes(data_prop=True)`; tensors it leaves unknown (Range-derived shapes,
say) come from ONNX Runtime's symbolic shape inference on the fixed graph, and anything still unknown
from one ONNX Runtime run on zeros that returns exactly those tensors. `ShapeMap.method` says which
steps were needed.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper

TENSOR_OPS = ("MatMul", "Gemm", "Conv", "ConvTranspose", "Einsum")
METHODS = ("onnx", "symbolic", "onnxruntime")
_STRIP_ELEMENTS = 1024  # initializers larger than this become typed inputs in the skeleton


def itemsize(elem_type: int) -> int:
    if elem_type in (TensorProto.UNDEFINED, TensorProto.STRING):
        return 4
    return int(np.dtype(helper.tensor_dtype_to_np_dtype(elem_type)).itemsize)


@dataclass(frozen=True)
class Skeleton:
    """A graph without its weight data: big initializers become typed inputs (shapes stay exact)."""

    model: onnx.ModelProto
    inputs: tuple[str, ...]  # the real graph inputs, in order
    weights: Mapping[str, tuple[int, tuple[int, ...]]]  # initializer / Constant name -> (elem type, dims)


def load_skeleton(path: str | os.PathLike[str]) -> Skeleton:
    """Read an ONNX file's structure (no external weight data) for counting."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: ONNX file not found; run `python -m f5build export` (or quantize)")
    return skeleton(onnx.load(os.fspath(p), load_external_data=False))


def skeleton(model: onnx.ModelProto) -> Skeleton:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    init_names = {i.name for i in g.initializer}
    inputs = tuple(i.name for i in g.input if i.name not in init_names)
    weights: dict[str, tuple[int, tuple[int, ...]]] = {}
    keep, moved = [], []
    for init in g.initializer:
        weights[init.name] = (init.data_type, tuple(int(d) for d in init.dims))
        external = init.data_location == TensorProto.EXTERNAL
        if external or math.prod(init.dims) > _STRIP_ELEMENTS:
            moved.append(helper.make_tensor_value_info(init.name, init.data_type, list(init.dims)))
        else:
            keep.append(init)
    for node in g.node:
        if node.op_type == "Constant" and node.output:
            for a in node.attribute:
                if a.name == "value" and a.type == onnx.AttributeProto.TENSOR:
                    weights[node.output[0]] = (a.t.data_type, tuple(int(d) for d in a.t.dims))
    del g.initializer[:]
    g.initializer.extend(keep)
    listed = {i.name for i in g.input}
    g.input.extend(v for v in moved if v.name not in listed)
    return Skeleton(m, inputs, weights)


def input_shapes(skel: Skeleton, dims: Mapping[str, int]) -> dict[str, tuple[int, ...]]:
    """Concrete shapes of the graph inputs, symbolic dims given by their dim_param names."""
    out = {}
    by_name = {i.name: i for i in skel.model.graph.input}
    for name in skel.inputs:
        shape = []
        for d in by_name[name].type.tensor_type.shape.dim:
            if d.HasField("dim_value"):
                shape.append(int(d.dim_value))
            elif d.dim_param in dims:
                shape.append(int(dims[d.dim_param]))
            else:
                raise ValueError(f"input {name!r}: symbolic dim {d.dim_param!r} has no value (given {dict(dims)})")
        out[name] = tuple(shape)
    return out


@dataclass
class ShapeMap:
    """elem type and concrete shape of every tensor; `method` names the inference steps used."""

    types: dict[str, int] = field(default_factory=dict)
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    method: str = "onnx"

    def numel(self, name: str) -> int:
        return math.prod(self.shapes[name])

    def nbytes(self, name: str) -> int:
        return self.numel(name) * itemsize(self.types.get(name, TensorProto.FLOAT))


def _fixed(skel: Skeleton, shapes: Mapping[str, Sequence[int]]) -> onnx.ModelProto:
    m = onnx.ModelProto()
    m.CopyFrom(skel.model)
    for vi in m.graph.input:
        if vi.name in shapes:
            want = list(shapes[vi.name])
            dims = vi.type.tensor_type.shape.dim
            if len(dims) != len(want):
                raise ValueError(f"input {vi.name!r} has rank {len(dims)}, given shape {want}")
            for d, v in zip(dims, want, strict=True):
                if d.HasField("dim_value") and d.dim_value != v:
                    raise ValueError(f"input {vi.name!r}: static dim {d.dim_value} != given {v}")
                d.dim_value = int(v)
    del m.graph.value_info[:]
    return m


def _collect(m: onnx.ModelProto, smap: ShapeMap, only_missing: bool) -> None:
    g = m.graph
    for vi in [*g.input, *g.value_info, *g.output]:
        tt = vi.type.tensor_type
        if tt.elem_type and (vi.name not in smap.types or not only_missing):
            smap.types[vi.name] = tt.elem_type
        known = tt.HasField("shape") and all(d.HasField("dim_value") for d in tt.shape.dim)
        if known and vi.name not in smap.shapes:
            smap.shapes[vi.name] = tuple(int(d.dim_value) for d in tt.shape.dim)
    for init in g.initializer:
        smap.types[init.name] = init.data_type
        smap.shapes[init.name] = tuple(int(d) for d in init.dims)


def needed_tensors(model: onnx.ModelProto) -> list[str]:
    """Tensors whose shapes the count needs: every node output and every tensor-op input."""
    names: dict[str, None] = {}
    for n in model.graph.node:
        if n.op_type in TENSOR_OPS:
            names.update(dict.fromkeys(x for x in n.input if x))
        names.update(dict.fromkeys(x for x in n.output if x))
    return list(names)


def resolve_shapes(skel: Skeleton, shapes: Mapping[str, Sequence[int]], methods: Sequence[str] = METHODS) -> ShapeMap:
    """Concrete shapes of every needed tensor at the given input shapes (see the module doc)."""
    m = _fixed(skel, shapes)
    smap = ShapeMap(method="")
    used = []
    need = needed_tensors(m)
    _collect(m, smap, only_missing=False)
    for method in methods:
        missing = [n for n in need if n not in smap.shapes]
        if not missing:
            break
        used.append(method)
        if method == "onnx":
            inferred = onnx.shape_inference.infer_shapes(m, data_prop=True)
            _collect(inferred, smap, only_missing=False)
        elif method == "symbolic":
            from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

            try:
                inferred = SymbolicShapeInference.infer_shapes(m, auto_merge=True)
            except Exception:  # any failure here falls through to the ONNX Runtime run
                continue
            _collect(inferred, smap, only_missing=True)
        elif method == "onnxruntime":
            _run_zeros(m, missing, smap)
        else:
            raise ValueError(f"unknown shape method {method!r} (choose from {', '.join(METHODS)})")
    missing = [n for n in need if n not in smap.shapes]
    if missing:
        raise ValueError(f"shapes still unknown after {'+'.join(used)}: {missing[:5]} ...")
    smap.method = "+".join(used) or "onnx"
    return smap


def _run_zeros(m: onnx.ModelProto, names: Sequence[str], smap: ShapeMap) -> None:
    """One ONNX Runtime run on zeros (weights too) returning exactly `names`; record their shapes."""
    import onnxruntime as ort

    r = onnx.ModelProto()
    r.CopyFrom(m)
    typed = ShapeMap()
    # element types (ONNX Runtime needs them on every output), even where shapes are unknown
    with contextlib.suppress(Exception):
        _collect(onnx.shape_inference.infer_shapes(r), typed, only_missing=False)
    outputs = {o.name for o in r.graph.output}
    for n in names:
        if n not in outputs:
            elem = smap.types.get(n) or typed.types.get(n)
            vi = helper.make_tensor_value_info(n, elem, None) if elem else onnx.ValueInfoProto(name=n)
            r.graph.output.append(vi)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    sess = ort.InferenceSession(r.SerializeToString(), so, providers=["CPUExecutionProvider"])
    feed = {}
    for i in sess.get_inputs():
        vi = next(v for v in r.graph.input if v.name == i.name)
        shape = [int(d.dim_value) for d in vi.type.tensor_type.shape.dim]
        feed[i.name] = np.zeros(shape, dtype=helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type))
    want = [o.name for o in sess.get_outputs() if o.name in set(names)]
    for n, v in zip(want, sess.run(want, feed), strict=True):
        smap.shapes[n] = tuple(int(d) for d in np.shape(v))
        smap.types.setdefault(n, helper.np_dtype_to_tensor_dtype(np.asarray(v).dtype))


def dims_by_role(skel: Skeleton, specs: Iterable[Any], roles: Mapping[str, int]) -> dict[str, tuple[int, ...]]:
    """Input shapes from the graph contract's axis roles (B, N, F ...): static ONNX dims win."""
    by_name = {i.name: i for i in skel.model.graph.input}
    out = {}
    for spec in specs:
        if spec.name not in by_name:
            raise ValueError(f"graph has no input {spec.name!r} (has {', '.join(skel.inputs)})")
        dims = by_name[spec.name].type.tensor_type.shape.dim
        if len(dims) != len(spec.axes):
            raise ValueError(f"input {spec.name!r}: rank {len(dims)}, the contract says {''.join(spec.axes)}")
        shape = []
        for d, role in zip(dims, spec.axes, strict=True):
            if d.HasField("dim_value"):
                shape.append(int(d.dim_value))
            elif role in roles:
                shape.append(int(roles[role]))
            else:
                raise ValueError(f"input {spec.name!r}: symbolic axis {role} ({d.dim_param!r}) has no value")
        out[spec.name] = tuple(shape)
    return out


_BUCKET_RE = re.compile(r"^n(\d+)_b(\d+)$")


def parse_bucket(name: str) -> tuple[int, int]:
    """'n1536_b1' -> (1536, 1)."""
    m = _BUCKET_RE.match(name.strip())
    if not m:
        raise ValueError(f"bucket {name!r}: expected n<frames>_b<batch>, e.g. n1536_b1")
    return int(m.group(1)), int(m.group(2))
