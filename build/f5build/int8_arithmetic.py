"""Which INT8 arithmetic ONNX Runtime's CPU provider runs on this processor.

The cpu-int8 variant multiplies UINT8 activations by INT8 weights (ONNX Runtime dynamic
quantization). MLAS picks the kernel from the processor's CPUID: with VNNI (AVX512-VNNI, AVX-VNNI)
or Arm's dot-product instructions every product is accumulated in 32 bits, exact; on x86 processors
with AVX2 but no VNNI the u8s8 kernel multiplies with `vpmaddubsw`, which adds two adjacent
products into a 16-bit lane that *saturates* at 32767. Two products of 255 x 127 overflow it.
So the same graph computes different numbers on the two kinds of processor, and accuracy measured on
one says nothing certain about the other.

`probe()` asks the running ONNX Runtime directly: one MatMulInteger whose pair sums overflow 16 bits,
compared with the exact integer result. It reads no flags and trusts no CPU name, so it also tells the
truth under an emulated CPU (`nox -s avx2` runs validate under qemu-user's Haswell model, whose
CPUID has AVX2 and no VNNI), where /proc/cpuinfo still describes the host.

    python -m f5build.int8_arithmetic [--expect exact|saturating]
    python -m f5build.int8_arithmetic --artifacts artifacts/<name>   # AVX2 saturation on real inputs

The second form answers "does the cpu-int8 step graph saturate on an AVX2 CPU?" on any machine.
`avx2_matmul_integer` computes MatMulInteger as ONNX Runtime's AVX2 u8s8 kernel does: the raw u8
activations times the s8 weights, each two consecutive products along K added and clipped to 16 bits,
those sums added in 32 bits, the activation zero point times the weights' column sums subtracted
(`tests/test_int8_arithmetic.py` checks it bit for bit against ONNX Runtime under qemu-user's
Haswell model). `measure_saturation` runs the cpu-int8 step graph on the calibrate stage's held-out
recorded step calls, takes every MatMulInteger's real u8 input and zero point, and reports per
MatMul how many pair sums overflow 16 bits and what that does to its output (SNR against the exact
product). Where no pair overflows, the AVX2 kernel computes the same integers as a VNNI one, so the
cpu-int8 accuracy validate measured on a VNNI machine holds on AVX2 unchanged. Emulating the whole
graph instead is impractical: under qemu-user an FP32 MatMul runs ~10,000x slower than native.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from f5build.context import ROOT

K = 64  # 32 pairs of 255 x 127: 2,072,640 exact, 32 x 32767 = 1,048,544 when each pair saturates


@dataclass(frozen=True)
class Int8Arithmetic:
    """The probe's result: what ONNX Runtime returned for a product whose exact value is known."""

    value: int
    exact_value: int

    @property
    def exact(self) -> bool:
        return self.value == self.exact_value

    @property
    def kind(self) -> str:
        """`exact` (32-bit accumulation: VNNI-class) or `saturating` (AVX2 u8s8: 16-bit pair sums)."""
        return "exact" if self.exact else "saturating"

    def describe(self) -> str:
        if self.exact:
            return "u8 x s8 products accumulate exactly in 32 bits (VNNI-class kernels)"
        return (
            f"u8 x s8 pair sums saturate at 16 bits (AVX2 kernels without VNNI): "
            f"{self.value:,} where the exact result is {self.exact_value:,}"
        )

    def to_dict(self) -> dict[str, object]:
        return {"kind": self.kind, "value": self.value, "exact_value": self.exact_value, "text": self.describe()}


def probe() -> Int8Arithmetic:
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    weights = numpy_helper.from_array(np.full((K, 1), 127, np.int8), "b")
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["a", "b"], ["y"])],
        "int8_arithmetic_probe",
        [helper.make_tensor_value_info("a", TensorProto.UINT8, [1, K])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, [1, 1])],
        [weights],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (y,) = sess.run(None, {"a": np.full((1, K), 255, np.uint8)})
    return Int8Arithmetic(value=int(np.asarray(y).reshape(-1)[0]), exact_value=K * 255 * 127)


def _pair_sums(a: np.ndarray, b: np.ndarray) -> Iterator[np.ndarray]:
    """The AVX2 u8s8 kernel's pair sums of u8 `a` (rows, K) x s8 `b` (K, N), before saturation: int32
    (rows, ceil(K/2), N), in slices of 64 rows. K is zero-padded to a multiple of 4, as the kernel packs
    it, and each two consecutive products along K form a pair."""
    k = a.shape[-1]
    pad = (-k) % 4
    aa = np.pad(a.astype(np.int32), ((0, 0), (0, pad)))
    bb = np.pad(b.astype(np.int32), ((0, pad), (0, 0)))
    for lo in range(0, aa.shape[0], 64):
        r = aa[lo : lo + 64]
        yield r[:, 0::2, None] * bb[None, 0::2] + r[:, 1::2, None] * bb[None, 1::2]


def _avx2_product(a: np.ndarray, b: np.ndarray, a_zero_point: int) -> tuple[np.ndarray, int, int]:
    """u8 `a` (rows, K) x s8 `b` (K, N) in AVX2 arithmetic, in one pass over the pair sums:
    (int64 (rows, N) result, pair sums outside [-32768, 32767], largest |pair sum|)."""
    if a.dtype != np.uint8 or b.dtype != np.int8:
        raise TypeError(f"expected u8 activations and s8 weights, got {a.dtype} and {b.dtype}")
    sums, over, peak = [], 0, 0
    for pairs in _pair_sums(a, b):
        over += int(((pairs > 32767) | (pairs < -32768)).sum())
        peak = max(peak, int(np.abs(pairs).max(initial=0)))
        sums.append(np.clip(pairs, -32768, 32767).sum(axis=1, dtype=np.int64))
    out = np.concatenate(sums) if sums else np.zeros((0, b.shape[1]), np.int64)
    return out - int(a_zero_point) * b.astype(np.int64).sum(axis=0), over, peak


def avx2_matmul_integer(a: np.ndarray, b: np.ndarray, a_zero_point: int) -> np.ndarray:
    """MatMulInteger(a u8 (..., K), b s8 (K, N), a_zero_point, b_zero_point 0) as ONNX Runtime's AVX2
    u8s8 kernel computes it (no VNNI): int32 (..., N), pair sums saturated at 16 bits."""
    out, _, _ = _avx2_product(a.reshape(-1, a.shape[-1]), b, a_zero_point)
    return out.astype(np.int32).reshape(*a.shape[:-1], b.shape[1])


def _s8_weights(node: Any, weights: Mapping[str, Any]) -> np.ndarray:
    """A MatMulInteger's weights, refused unless they are what the AVX2 model covers: a 2-D s8
    initializer with zero points 0 (ONNX Runtime's symmetric dynamic quantization)."""
    from onnx import numpy_helper

    def value(name: str) -> np.ndarray | None:
        w = weights.get(name)
        return None if w is None else w if isinstance(w, np.ndarray) else numpy_helper.to_array(w)

    b = value(node.input[1])
    zp = value(node.input[3]) if len(node.input) > 3 and node.input[3] else None
    if b is None or b.dtype != np.int8 or b.ndim != 2 or (zp is not None and np.any(zp != 0)):
        raise ValueError(f"{node.name}: only 2-D s8 initializer weights with zero points 0 are modelled")
    return b


@dataclass(frozen=True)
class MatMulSaturation:
    """One MatMulInteger of the cpu-int8 step graph over the held-out recorded calls."""

    node: str
    k: int
    n: int
    rows: int  # activation rows seen (every row of every call)
    pairs: int  # pair sums the AVX2 kernel forms: rows x ceil(K / 2) x N
    saturated: int  # of them outside [-32768, 32767]
    max_pair: int  # the largest |pair sum| seen (32767 is the 16-bit limit)
    snr_db: float  # the output's exact value against its AVX2 error (inf: identical)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def measure_saturation(artifacts: Path, per_bucket: int = 4) -> list[MatMulSaturation]:
    """Per MatMulInteger of `artifacts`' cpu-int8 step graph: how the AVX2 kernel would do on the
    held-out recorded step calls (see the module docstring)."""
    import onnx
    import onnxruntime as ort

    from f5build.attention_forms import recorded_feeds
    from f5rt.manifest import load_manifest

    manifest = load_manifest(artifacts)
    path = manifest.find("step", "cpu-int8")
    model = onnx.load(str(path))
    weights = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    nodes = [n for n in model.graph.node if n.op_type == "MatMulInteger"]
    if not nodes:
        raise ValueError(f"{path}: no MatMulInteger (not a dynamic INT8 graph?)")
    try:
        s8 = {n.name: _s8_weights(n, weights) for n in nodes}
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    wanted = sorted({x for n in nodes for x in (n.input[0], n.input[2])})
    known = {o.name for o in model.graph.output}
    for name in wanted:
        if name not in known:
            model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.UINT8, None))
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep every MatMulInteger
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    feeds = recorded_feeds(manifest, sorted(set(manifest.buckets.frames)), per_bucket)
    if not feeds:
        raise FileNotFoundError(f"{artifacts}: no held-out step recording; run the calibrate stage first")
    acc: dict[str, list[float]] = {n.name: [0, 0, 0, 0, 0.0, 0.0] for n in nodes}  # rows, pairs, sat, peak, S, E
    for _, _, feed in feeds:
        got = dict(zip(wanted, sess.run(wanted, feed), strict=True))
        for n in nodes:
            b = s8[n.name]
            a = np.asarray(got[n.input[0]]).reshape(-1, b.shape[0])
            zp = int(np.asarray(got[n.input[2]]).reshape(-1)[0]) if n.input[2] else 0
            exact = (a.astype(np.int64) - zp) @ b.astype(np.int64)
            avx2, over, peak = _avx2_product(a, b, zp)
            s = acc[n.name]
            s[0] += a.shape[0]
            s[1] += a.shape[0] * ((a.shape[1] + 1) // 2) * b.shape[1]
            s[2] += over
            s[3] = max(s[3], peak)
            s[4] += float(np.square(exact.astype(np.float64)).sum())
            s[5] += float(np.square((avx2 - exact).astype(np.float64)).sum())
    out = []
    for n in nodes:
        rows, pairs, over, peak, sig, err = acc[n.name]
        k, cols = s8[n.name].shape
        snr = math.inf if err == 0 else 10 * math.log10(sig / err) if sig > 0 else -math.inf
        out.append(MatMulSaturation(n.name, int(k), int(cols), int(rows), int(pairs), int(over), int(peak), snr))
    return out


EMULATED = "saturating (AVX2 u8s8, emulated in the graph: f5build.int8_arithmetic.avx2_graph)"


def arithmetic_of(manifest: Any) -> dict[str, object]:
    """The INT8 arithmetic a validate run of `manifest`'s cpu-int8 step graph measures: the AVX2 one
    when the graph was rewritten to compute it (`avx2_artifacts`), else this machine's (`probe`)."""
    rel = manifest.find("step", "cpu-int8").relative_to(manifest.root).as_posix()
    if manifest.files.get(rel, {}).get("int8_arithmetic") == "avx2-emulated":
        return {"kind": "saturating", "text": EMULATED}
    return probe().to_dict()


def avx2_graph(model: Any) -> Any:
    """`model` with every MatMulInteger replaced by standard int32 ops computing what ONNX Runtime's AVX2
    u8s8 kernel computes (`avx2_matmul_integer`): consecutive products along K added in pairs, each pair
    sum clipped to 16 bits, the pairs added, the activation zero point times the column sums removed.

    The result runs on any CPU and gives, bit for bit, the integers an AVX2 CPU without VNNI gives, so
    validate can judge the cpu-int8 graph in that arithmetic on this machine. It holds a (rows, K/2, N)
    int32 tensor per MatMul: fine for checking, not for serving.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = {i.name: i for i in model.graph.initializer}
    out = onnx.ModelProto()
    out.CopyFrom(model)
    del out.graph.node[:]
    extra = []
    for node in model.graph.node:
        if node.op_type != "MatMulInteger":
            out.graph.node.append(node)
            continue
        b = _s8_weights(node, weights)
        k = b.shape[0]
        bp = np.pad(b.astype(np.int32), ((0, (-k) % 2), (0, 0)))
        p = f"{node.name}/avx2"
        extra += [
            numpy_helper.from_array(bp[0::2], f"{p}/b_even"),
            numpy_helper.from_array(bp[1::2], f"{p}/b_odd"),
            numpy_helper.from_array(b.astype(np.int32).sum(axis=0).astype(np.int32), f"{p}/b_colsum"),
            numpy_helper.from_array(np.arange(0, k, 2, dtype=np.int64), f"{p}/even"),
            # an odd K pairs its last product with a zero: any index will do, b_odd's last row is 0
            numpy_helper.from_array(np.minimum(np.arange(1, k + (k % 2), 2), k - 1).astype(np.int64), f"{p}/odd"),
            numpy_helper.from_array(np.array([-1], np.int64), f"{p}/minus1"),
            numpy_helper.from_array(np.array([-2], np.int64), f"{p}/minus2"),
            numpy_helper.from_array(np.array(-32768, np.int32), f"{p}/lo"),
            numpy_helper.from_array(np.array(32767, np.int32), f"{p}/hi"),
        ]
        a32 = f"{p}/a32"
        nodes = [helper.make_node("Cast", [node.input[0]], [a32], to=TensorProto.INT32)]
        for half in ("even", "odd"):
            nodes += [
                helper.make_node("Gather", [a32, f"{p}/{half}"], [f"{p}/a_{half}"], axis=-1),  # (..., K/2)
                helper.make_node("Unsqueeze", [f"{p}/a_{half}", f"{p}/minus1"], [f"{p}/a_{half}_col"]),
                helper.make_node("Mul", [f"{p}/a_{half}_col", f"{p}/b_{half}"], [f"{p}/prod_{half}"]),
            ]
        zp = node.input[2] if len(node.input) > 2 and node.input[2] else None
        nodes += [
            helper.make_node("Add", [f"{p}/prod_even", f"{p}/prod_odd"], [f"{p}/pairs"]),
            helper.make_node("Clip", [f"{p}/pairs", f"{p}/lo", f"{p}/hi"], [f"{p}/pairs16"]),
            helper.make_node("ReduceSum", [f"{p}/pairs16", f"{p}/minus2"], [f"{p}/sum"], keepdims=0),
        ]
        if zp is None:
            nodes.append(helper.make_node("Identity", [f"{p}/sum"], [node.output[0]]))
        else:
            nodes += [
                helper.make_node("Cast", [zp], [f"{p}/zp32"], to=TensorProto.INT32),
                helper.make_node("Mul", [f"{p}/zp32", f"{p}/b_colsum"], [f"{p}/zp_term"]),
                helper.make_node("Sub", [f"{p}/sum", f"{p}/zp_term"], [node.output[0]]),
            ]
        out.graph.node.extend(nodes)
    used = {x for n in out.graph.node for x in n.input}
    kept = [i for i in out.graph.initializer if i.name in used]  # the replaced s8 weights go
    del out.graph.initializer[:]
    out.graph.initializer.extend([*kept, *extra])
    return out


def avx2_artifacts(artifacts: Path, dest: Path) -> Path:
    """A copy of `artifacts` whose cpu-int8 step graph computes in AVX2 arithmetic
    (`avx2_graph`), its manifest entry updated, for `f5build validate` to judge."""
    import shutil

    import onnx

    from f5rt.manifest import file_entry, load_manifest, update_manifest

    manifest = load_manifest(artifacts)
    rel = manifest.find("step", "cpu-int8").relative_to(artifacts).as_posix()
    model = avx2_graph(onnx.load(str(artifacts / rel)))
    if dest.exists():
        shutil.rmtree(dest)
    # copies, not hard links: onnx refuses external data files with several links
    shutil.copytree(artifacts, dest, ignore=shutil.ignore_patterns("engines", "triton"))
    entry = dict(manifest.files[rel])
    for old in (rel, *entry.get("external_data", [])):
        (dest / old).unlink(missing_ok=True)  # onnx appends to an existing external data file
    data = f"{rel}.data"
    onnx.save(model, str(dest / rel), save_as_external_data=True, location=data, size_threshold=1024)
    meta = {k: v for k, v in entry.items() if k not in ("sha256", "bytes")}

    def mutate(d: dict[str, Any]) -> None:
        for old in entry.get("external_data", []):
            d["files"].pop(old, None)
        d["files"][rel] = file_entry(dest, rel, **{**meta, "external_data": [data], "int8_arithmetic": "avx2-emulated"})
        d["files"][data] = file_entry(dest, data, kind="onnx-data", stage="int8_arithmetic")

    update_manifest(dest, mutate)
    return dest


def write_saturation_report(results: list[MatMulSaturation], artifacts: Path, outdir: Path) -> Path:
    from f5rt.files import atomic_path, atomic_write_json

    here = probe()
    total = sum(r.pairs for r in results)
    over = sum(r.saturated for r in results)
    worst = min(results, key=lambda r: r.snr_db)
    data = {
        "artifacts": str(artifacts),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "this_machine": here.to_dict(),
        "pairs": total,
        "saturated": over,
        "worst": worst.to_dict(),
        "matmuls": [r.to_dict() for r in results],
    }
    outdir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(outdir / "int8_arithmetic.json", data)
    lines = [
        "# cpu-int8 on AVX2 without VNNI: 16-bit pair-sum saturation on real inputs",
        "",
        f"`{artifacts}`, {data['date']}; the cpu-int8 step graph on the calibrate stage's held-out recorded step "
        "calls, every MatMulInteger's real u8 input through the AVX2 u8s8 kernel's arithmetic "
        "(`f5build.int8_arithmetic.avx2_matmul_integer`).",
        "",
        f"**{over:,} of {total:,} pair sums overflow 16 bits** "
        + (
            "(none: on an AVX2 CPU the cpu-int8 graph computes the same integers as on a VNNI one)."
            if over == 0
            else f"(worst MatMul `{worst.node}`: output SNR {worst.snr_db:.1f} dB against the exact product)."
        ),
        f"This machine's own arithmetic: {here.describe()}.",
        "",
        "| MatMul | K x N | rows | pair sums | overflowing | largest pair | output SNR |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        snr = "exact" if math.isinf(r.snr_db) else f"{r.snr_db:.1f} dB"
        lines.append(
            f"| `{r.node}` | {r.k} x {r.n} | {r.rows:,} | {r.pairs:,} | {r.saturated:,} | {r.max_pair:,} | {snr} |"
        )
    with atomic_path(outdir / "int8_arithmetic.md") as tmp:
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return outdir / "int8_arithmetic.md"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m f5build.int8_arithmetic", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--expect",
        choices=("exact", "saturating"),
        default=None,
        help="exit 1 unless the probe finds this arithmetic (a check that an emulated CPU took effect)",
    )
    p.add_argument(
        "--artifacts",
        type=Path,
        default=None,
        help="also measure AVX2 saturation of this model's cpu-int8 step graph on its held-out recorded step calls",
    )
    p.add_argument("--per-bucket", type=int, default=4, help="held-out recorded calls per bucket (default 4)")
    p.add_argument(
        "--validate",
        action="store_true",
        help="with --artifacts: run validate's cpu-int8 gates (step and end to end) with the graph computing in "
        "AVX2 arithmetic (on a temporary copy of the artifacts; their manifest's verdicts are not touched)",
    )
    p.add_argument("--reports", type=Path, default=ROOT / "reports", help="where int8_arithmetic.{md,json} go")
    args = p.parse_args(argv)
    if args.per_bucket < 1:
        p.error(f"--per-bucket must be at least 1, got {args.per_bucket}")
    found = probe()
    print(f"ONNX Runtime CPU INT8 arithmetic here: {found.describe()}")
    if args.expect is not None and found.kind != args.expect:
        print(
            f"error: expected {args.expect} INT8 arithmetic, found {found.kind}; under qemu-user pass "
            "`-cpu Haswell-v4` (AVX2, no VNNI) and check that qemu runs the build's Python",
            file=sys.stderr,
        )
        return 1
    if args.artifacts is not None:
        results = measure_saturation(args.artifacts, args.per_bucket)
        md = write_saturation_report(results, args.artifacts, args.reports)
        over = sum(r.saturated for r in results)
        worst = min(results, key=lambda r: r.snr_db)
        print(
            f"AVX2 u8s8 on {args.artifacts}: {over:,} of {sum(r.pairs for r in results):,} pair sums overflow 16 bits"
            + ("" if over == 0 else f"; worst output SNR {worst.snr_db:.1f} dB ({worst.node})")
        )
        print(f"wrote {md}")
        if args.validate:
            return validate_in_avx2_arithmetic(args.artifacts, args.reports / "avx2")
    elif args.validate:
        p.error("--validate needs --artifacts")
    return 0


def validate_in_avx2_arithmetic(artifacts: Path, reports: Path, **options: Any) -> int:
    """validate's cpu-int8 gates on `artifacts` with its cpu-int8 step graph in AVX2 arithmetic; the
    copy lives beside the artifacts while validate runs and is removed after. `options` are further
    ValidateOptions fields (e2e_lines, voices, ...)."""
    import shutil
    import tempfile

    from f5build.validate import ValidateOptions, run

    tmp = Path(tempfile.mkdtemp(prefix=f".{artifacts.name}.avx2-", dir=artifacts.parent))
    try:
        copy = avx2_artifacts(artifacts, tmp / artifacts.name)
        print(f"validate: cpu-int8 in AVX2 arithmetic ({copy})", flush=True)
        return run(ValidateOptions(root=copy, reports=reports, precisions=("cpu-int8",), record=False, **options))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
