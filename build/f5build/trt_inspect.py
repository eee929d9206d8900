"""What TensorRT made of the step graph's attention, read from the built engine with IEngineInspector.

The placement check (f5build.attention_pattern) proves the ONNX graph is in the pattern TensorRT can
fuse; whether TensorRT did is only known after the build ("TensorRT may decide not to fuse an MHA
graph into a single kernel", developer guide, Multi-Head Attention Fusion). So after building a step
engine the compile stage reads the engine's layer information (the engine is built with
`ProfilingVerbosity.DETAILED`, without which the inspector lists layer names only), with an execution
context whose input shapes are the first profile's, so every tensor has concrete dimensions, and:

* counts the attention blocks that ran as one fused MHA kernel: a layer whose name, type or tactic
  names an MHA kernel (`_gemm_mha_v2` on TensorRT 10.3 / JetPack 6.1 with FP16, NVIDIA/TensorRT#4167;
  `fmha` / `mha` in other releases) and whose metadata lists ONNX nodes of the block
  (`[ONNX Layer: /transformer_blocks.3/attn/MatMul]`);
* finds every layer input or output of (B, heads, N, N) (or Myelin's flattened (B * heads, N, N)):
  score matrices that still go through memory;
* records both in the manifest (the engine entry's `attention`) and prints a warning naming the
  blocks that were not fused.

`inspect_attention` talks to TensorRT; `attention_fusion` is the pure parsing, tested against the
emulation's inspector output (tests/emulation).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

MHA_MARKERS = ("_gemm_mha", "fmha", "mha_v2", "flash_attention", "multiheadattention", "mha")
_BLOCK = re.compile(r"(/transformer_blocks\.(\d+)/attn)/")
_ONNX_LAYER = re.compile(r"\[ONNX Layer: ([^\]]+)\]")


@dataclass(frozen=True)
class AttentionFusion:
    """What the engine inspector says about the step engine's attention blocks."""

    depth: int
    heads: int
    frames: int  # N of the shapes the inspector was given
    detailed: bool  # the engine was built with detailed profiling verbosity (layer info readable)
    layers: int
    mha_layers: tuple[str, ...] = ()
    fused_blocks: tuple[int, ...] = ()
    nn_tensors: tuple[str, ...] = ()  # "layer: tensor (dims)" of every (B, H, N, N) tensor left
    source: str = "IEngineInspector"

    @property
    def unfused_blocks(self) -> tuple[int, ...]:
        return tuple(i for i in range(self.depth) if i not in self.fused_blocks)

    @property
    def all_fused(self) -> bool:
        return self.detailed and not self.unfused_blocks and not self.nn_tensors

    def to_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "fused": len(self.fused_blocks),
            "unfused_blocks": [block_name(i) for i in self.unfused_blocks],
            "all_fused": self.all_fused,
        }

    def summary(self) -> str:
        if not self.detailed:
            return "attention fusion unknown: the engine's layer information has names only (not built with detailed profiling verbosity)"
        left = (
            f"{len(self.nn_tensors)} (B, heads, N, N) tensors remain"
            if self.nn_tensors
            else "no (B, heads, N, N) tensor remains"
        )
        return (
            f"{len(self.fused_blocks)} of {self.depth} attention blocks run as fused MHA kernels "
            f"({len(self.mha_layers)} MHA layers, {self.layers} layers, N = {self.frames}); {left}"
        )

    def warning(self) -> str | None:
        """The warning to print when fewer than `depth` blocks fused (None when all did)."""
        if self.all_fused:
            return None
        if not self.detailed:
            return f"WARNING: {self.summary()}; rebuild with ProfilingVerbosity.DETAILED to check the attention fusion"
        names = ", ".join(block_name(i) for i in self.unfused_blocks) or "none"
        first = f"; e.g. {self.nn_tensors[0]}" if self.nn_tensors else ""
        return (
            f"WARNING: TensorRT did not fuse attention into MHA kernels in {len(self.unfused_blocks)} of {self.depth} "
            f"blocks ({names}){first}: their score matrices go through memory (about 2x the step time on an Orin "
            "by the cost model). Check the step ONNX with the placement check (`attention_pattern` in the manifest) "
            "and the TensorRT release (JetPack 6.1+, TensorRT 10.3+)."
        )


def block_name(i: int) -> str:
    return f"/transformer_blocks.{i}/attn"


def _layer_text(layer: Mapping[str, Any]) -> str:
    return " ".join(str(layer.get(k, "")) for k in ("Name", "LayerType", "TacticName")).lower()


def _tensors(layer: Mapping[str, Any]) -> list[tuple[str, list[int]]]:
    out = []
    for key in ("Inputs", "Outputs"):
        for t in layer.get(key) or []:
            if isinstance(t, Mapping):
                dims = [int(d) for d in t.get("Dimensions") or []]
                out.append((str(t.get("Name", "?")), dims))
    return out


def is_scores(dims: Sequence[int], heads: int, frames: int, rows: int | None = None) -> bool:
    """(any, heads, N, N), or Myelin's (rows * heads, N, N); `rows` (the graph's batch rows: 2B with
    CFG) pins the flattened form, which a (rows, N, N) activation with N channels would match too."""
    if len(dims) == 4:
        return dims[1] == heads and dims[2] == dims[3] == frames
    if len(dims) == 3:
        lead = dims[0] == rows * heads if rows is not None else dims[0] % heads == 0
        return dims[1] == dims[2] == frames and lead
    return False


def attention_fusion(
    info: Mapping[str, Any] | str, depth: int, heads: int, frames: int, rows: int | None = None
) -> AttentionFusion:
    """Parse IEngineInspector.get_engine_information(JSON) of a step engine (dict or JSON text).

    `rows`: the attention's batch rows at the inspected shapes (2B for the CFG step), when known."""
    data: Any = json.loads(info) if isinstance(info, str) else info
    if not isinstance(data, Mapping) or not isinstance(data.get("Layers"), list):
        raise ValueError("engine information is not TensorRT's JSON layer list ({'Layers': [...]})")
    layers = data["Layers"]
    detailed = bool(layers) and all(isinstance(x, Mapping) for x in layers)
    if not detailed:
        return AttentionFusion(depth, heads, frames, False, len(layers))
    mha: list[str] = []
    fused: set[int] = set()
    nn: list[str] = []
    for layer in layers:
        name = str(layer.get("Name", ""))
        if any(m in _layer_text(layer) for m in MHA_MARKERS):
            mha.append(name)
            meta = str(layer.get("Metadata", ""))
            scopes = [*_ONNX_LAYER.findall(meta), name]
            fused.update(int(m.group(2)) for s in scopes if (m := _BLOCK.search(s + "/")) is not None)
        for tname, dims in _tensors(layer):
            if is_scores(dims, heads, frames, rows):
                nn.append(f"{name}: {tname} {tuple(dims)}")
    return AttentionFusion(
        depth, heads, frames, True, len(layers), tuple(mha), tuple(sorted(i for i in fused if i < depth)), tuple(nn)
    )


@dataclass(frozen=True)
class InspectShapes:
    """The input shapes given to the inspector's execution context (the first profile's opt shapes)."""

    profile: int
    shapes: Mapping[str, tuple[int, ...]] = field(default_factory=dict)

    @property
    def frames(self) -> int:
        return int(self.shapes["x"][1]) if "x" in self.shapes else 0

    @property
    def rows(self) -> int | None:
        """Attention batch rows: the step graph runs cond and uncond rows together (2B)."""
        return 2 * int(self.shapes["x"][0]) if "x" in self.shapes else None


def inspect_shapes(profiles: Sequence[Mapping[str, Any]]) -> InspectShapes:
    """The first profile's opt shapes (profile records of the build plan)."""
    p = profiles[0]
    return InspectShapes(int(p["index"]), {n: tuple(int(d) for d in s["opt"]) for n, s in p["shapes"].items()})


def engine_information(trt: Any, engine: Any, shapes: InspectShapes) -> str:
    """IEngineInspector's JSON for `engine`, with a context at `shapes` so dimensions are concrete."""
    context = engine.create_execution_context()
    if context is None:
        raise RuntimeError("TensorRT could not create an execution context for the engine inspector")
    for name, shape in shapes.shapes.items():
        if not context.set_input_shape(name, shape):
            raise RuntimeError(f"engine inspector: input shape {shape} for '{name}' refused (see the TensorRT log)")
    inspector = engine.create_engine_inspector()
    if inspector is None:
        raise RuntimeError("TensorRT returned no engine inspector")
    inspector.execution_context = context
    return str(inspector.get_engine_information(trt.LayerInformationFormat.JSON))


def inspect_attention(
    trt: Any, engine: Any, profiles: Sequence[Mapping[str, Any]], depth: int, heads: int
) -> AttentionFusion:
    """Read a built step engine's attention fusion (see the module doc)."""
    shapes = inspect_shapes(profiles)
    return attention_fusion(engine_information(trt, engine, shapes), depth, heads, shapes.frames, shapes.rows)
