"""What a TensorRT release's ONNX parser accepts, and the graph I/O contract the engines need.

Checked on the build machine, before any plan is written, so a graph the device's TensorRT cannot
parse (opset, IR version, foreign domains) or that does not fit the runtime's contract (names, dtypes,
dynamic axes) fails here with the fix, not on the Jetson after an hour of tuning.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any

from f5rt.backends.trt.contract import GRAPH_INPUTS, GRAPH_OUTPUTS
from f5rt.buckets import BucketTable

# ONNX TensorProto element types of the graph contract's dtypes.
_ONNX_DTYPES = {1: "float32", 6: "int32", 7: "int64", 9: "bool", 10: "float16"}


@dataclass(frozen=True)
class OnnxLimits:
    """What one TensorRT release's ONNX parser (onnx-tensorrt) reads."""

    tensorrt: str  # major.minor
    min_opset: int  # default-domain (ai.onnx) opset range its importers cover
    max_opset: int
    max_ir_version: int  # IR version of the onnx release the parser is built against
    domains: frozenset[str]  # opset domains whose nodes it imports ("" and "ai.onnx" are the default one)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "domains": sorted(self.domains)}


# ONNX limits per target TensorRT (major.minor); add a row for a newer target.
# 10.3 (JetPack 6.1/6.2): onnx-tensorrt's docs/operators.md for 10.x says "TensorRT 10.0 supports
# operators in the inclusive range of opset 9 to opset 20" (release/10.0-GA, 10.1-GA); its README says
# "TensorRT 10.1 supports ONNX release 1.16.0" and .gitmodules pins third_party/onnx to v1.16.0; its
# docs/Changelog.md lists no ONNX submodule change for 10.2-10.5 ("TensorRT 10.6 GA: Updated ONNX
# submodule version to 1.17.0"), so 10.3 parses with onnx 1.16.0, whose IR version is 10 (onnx's
# docs/Versioning.md and onnx.helper.VERSION_TABLE: ('1.16.0', IR 10, opset 21)). onnx 1.16 defines
# opset 21, but the parser's importers stop at 20 (TOOLCHAIN.md: JetPack 6's TensorRT 10.3 parses
# opset <= 20). Nodes of other domains (com.microsoft, ai.onnx.ml) are not TensorRT layers.
ONNX_LIMITS: dict[str, OnnxLimits] = {
    "10.3": OnnxLimits("10.3", min_opset=9, max_opset=20, max_ir_version=10, domains=frozenset({"", "ai.onnx"})),
}
DEFAULT_TRT_TARGET = "10.3"  # JetPack 6 (Jetson AGX Orin)


Dim = int | str | None


@dataclass(frozen=True)
class GraphIO:
    """An ONNX graph's inputs {name: (dims, dtype)} and outputs {name: dtype}; dims are ints or symbols.

    With what the parser checks: IR version, opset imports {domain: version} and the domains its
    nodes use (subgraphs and local functions included); None where not read (hand-made GraphIO).
    """

    inputs: dict[str, tuple[tuple[Dim, ...], str]]
    outputs: dict[str, str]
    ir_version: int | None = None
    opsets: dict[str, int] | None = None
    node_domains: frozenset[str] | None = None
    function_domains: frozenset[str] = frozenset()


def read_graph_io(onnx_path: str | os.PathLike[str]) -> GraphIO:
    """Graph I/O of an ONNX file without loading external weight files."""
    import onnx

    model = onnx.load(os.fspath(onnx_path), load_external_data=False)

    def dims(vi: Any) -> tuple[Dim, ...]:
        out: list[Dim] = []
        for d in vi.type.tensor_type.shape.dim:
            out.append(d.dim_value if d.HasField("dim_value") else (d.dim_param or None))
        return tuple(out)

    def dtype(vi: Any) -> str:
        code = int(vi.type.tensor_type.elem_type)
        return _ONNX_DTYPES.get(code, f"onnx-type-{code}")

    def domains(nodes: Any) -> set[str]:
        out: set[str] = set()
        for node in nodes:
            out.add(node.domain)
            for attr in node.attribute:
                for g in [attr.g] if attr.HasField("g") else list(attr.graphs):
                    out |= domains(g.node)
        return out

    used = domains(model.graph.node)
    for fn in model.functions:
        used |= domains(fn.node)
    initializers = {i.name for i in model.graph.initializer}
    inputs = {vi.name: (dims(vi), dtype(vi)) for vi in model.graph.input if vi.name not in initializers}
    return GraphIO(
        inputs,
        {vi.name: dtype(vi) for vi in model.graph.output},
        ir_version=int(model.ir_version),
        opsets={o.domain: int(o.version) for o in model.opset_import},
        node_domains=frozenset(used),
        function_domains=frozenset(fn.domain for fn in model.functions),
    )


def onnx_limits(target: str) -> OnnxLimits:
    """The ONNX limits of a TensorRT release, by major.minor ("10.3" or "10.3.0.30")."""
    key = ".".join(str(target).split(".")[:2])
    if key not in ONNX_LIMITS:
        raise ValueError(
            f"no ONNX limits known for TensorRT {target} (known: {', '.join(sorted(ONNX_LIMITS))}); "
            "add its row to f5build.compile.ONNX_LIMITS"
        )
    return ONNX_LIMITS[key]


def check_onnx_version(io: GraphIO, limits: OnnxLimits, rel: str) -> None:
    """Refuse an ONNX file the target TensorRT's parser cannot read: IR version, default-domain opset,
    node domains it has no importers for (an opset import no node uses is harmless)."""
    where = f"{rel}: TensorRT {limits.tensorrt}'s ONNX parser"
    if io.ir_version is None or io.opsets is None or io.node_domains is None:
        raise ValueError(f"{rel}: IR version and opsets not read; use read_graph_io")
    if io.ir_version > limits.max_ir_version:
        raise ValueError(
            f"{where} reads IR version <= {limits.max_ir_version}, the file has IR version {io.ir_version}; "
            f"write it with ir_version <= {limits.max_ir_version} (onnx.helper.make_model(..., ir_version=...)) or target a newer TensorRT"
        )
    default = [v for d, v in io.opsets.items() if d in ("", "ai.onnx")]
    if not default:
        if io.node_domains & {"", "ai.onnx"}:
            raise ValueError(f"{rel}: nodes of the default ONNX domain but no ai.onnx opset import")
    else:
        opset = max(default)
        if not limits.min_opset <= opset <= limits.max_opset:
            raise ValueError(
                f"{where} supports opset {limits.min_opset} to {limits.max_opset}, the file has opset {opset}; "
                f"export or quantize it at an opset in that range (export's --opset, default 17)"
            )
    unknown = sorted(io.node_domains - limits.domains - io.function_domains)
    if unknown:
        raise ValueError(
            f"{where} does not know the opset domain(s) {unknown} its nodes use "
            f"(it imports {sorted({d or 'ai.onnx' for d in limits.domains})} and local functions)"
        )


def check_graph_io(graph: str, io: GraphIO, buckets: BucketTable, mel_dim: int, text_dim: int, rel: str) -> None:
    """The ONNX graph must match the I/O contract, with dynamic batch/frame axes and the model's C and D."""
    want_in = {s.name: s for s in GRAPH_INPUTS[graph]}
    want_out = {s.name: s for s in GRAPH_OUTPUTS[graph]}
    for label, have, want in (("inputs", set(io.inputs), set(want_in)), ("outputs", set(io.outputs), set(want_out))):
        if have != want:
            raise ValueError(
                f"{rel}: {graph} graph {label} are {sorted(have)}, expected {sorted(want)}; re-export the graph"
            )
    for name, spec in want_out.items():
        if io.outputs[name] != spec.dtype:
            raise ValueError(f"{rel}: output {name} is {io.outputs[name]}, the contract says {spec.dtype}")
    fixed = {"C": mel_dim, "D": text_dim}
    varying = {"B": set(buckets.batch), "N": set(buckets.frames), "F": set(range(1, buckets.max_frames + 1))}
    for name, spec in want_in.items():
        dims, dtype = io.inputs[name]
        if dtype != spec.dtype:
            raise ValueError(f"{rel}: input {name} is {dtype}, the contract says {spec.dtype}; re-export the graph")
        if len(dims) != len(spec.axes):
            raise ValueError(
                f"{rel}: input {name} has rank {len(dims)}, expected {len(spec.axes)} ({''.join(spec.axes)})"
            )
        for axis, (d, role) in enumerate(zip(dims, spec.axes, strict=True)):
            if not isinstance(d, int) or d <= 0:
                continue  # symbolic or unknown: dynamic
            if role in fixed and d != fixed[role]:
                raise ValueError(f"{rel}: input {name} axis {axis} is {d}, the manifest's model says {fixed[role]}")
            if role in varying and varying[role] != {d}:
                raise ValueError(
                    f"{rel}: input {name} axis {axis} ({role}) is static ({d}); export it as a dynamic axis so "
                    f"one engine serves every bucket"
                )
