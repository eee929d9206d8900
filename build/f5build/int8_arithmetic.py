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
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

import numpy as np

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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m f5build.int8_arithmetic", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--expect",
        choices=("exact", "saturating"),
        default=None,
        help="exit 1 unless the probe finds this arithmetic (a check that an emulated CPU took effect)",
    )
    args = p.parse_args(argv)
    found = probe()
    print(f"ONNX Runtime CPU INT8 arithmetic here: {found.describe()}")
    if args.expect is not None and found.kind != args.expect:
        print(
            f"error: expected {args.expect} INT8 arithmetic, found {found.kind}; under qemu-user pass "
            "`-cpu Haswell-v4` (AVX2, no VNNI) and check that qemu runs the build's Python",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
