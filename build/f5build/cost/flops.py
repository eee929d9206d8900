"""FLOPs of one tensor op (MatMul, Gemm, Conv, ConvTranspose, Einsum), exactly, from its shapes.

A multiply-add is 2 FLOPs (MatMul (B,N,K)x(K,M) = 2*B*N*K*M); an einsum that sums over no index is
a pure product, 1 FLOP per multiply. A module of its own because these are per-node formulas: they
need one node and the shapes around it, not the graph walk of f5build.cost.count that decides each
op's precision and bytes, and they are tested on their own (einsum equations, ellipses).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import onnx
from onnx import helper

from f5build.cost.shapes import ShapeMap


def _attr(node: onnx.NodeProto, name: str, default: Any) -> Any:
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def einsum_flops(equation: str, shapes: Sequence[Sequence[int]]) -> int:
    """2 x the product of all index sizes when something is summed, else 1 x it (a pure product)."""
    eq = equation.replace(" ", "")
    lhs, _, rhs = eq.partition("->")
    terms = lhs.split(",")
    if len(terms) != len(shapes):
        raise ValueError(f"einsum {equation!r}: {len(terms)} operands, {len(shapes)} shapes")
    if "->" not in eq:
        letters = [c for c in lhs if c.isalpha()]
        rhs = "".join(sorted(c for c in set(letters) if letters.count(c) == 1))
    sizes: dict[str, int] = {}
    for term, shape in zip(terms, shapes, strict=True):
        labels = list(term.replace("...", "."))
        if "." in labels:
            k = labels.index(".")
            n_ell = len(shape) - (len(labels) - 1)
            labels = labels[:k] + [f".{n_ell - j}" for j in range(n_ell)] + labels[k + 1 :]
        if len(labels) != len(shape):
            raise ValueError(f"einsum {equation!r}: term {term!r} does not match shape {list(shape)}")
        for lab, s in zip(labels, shape, strict=True):
            sizes[lab] = max(sizes.get(lab, 1), int(s))
    out = set(rhs.replace("...", ""))
    summed = any(not lab.startswith(".") and lab not in out for lab in sizes)
    total = math.prod(sizes.values())
    return (2 if summed else 1) * total * max(1, len(shapes) - 1)


def tensor_op_flops(node: onnx.NodeProto, smap: ShapeMap) -> int:
    """FLOPs (2 per multiply-add) of one MatMul / Gemm / Conv / ConvTranspose / Einsum node."""
    op = node.op_type
    if op == "Einsum":
        eq = _attr(node, "equation", b"")
        eq = eq.decode() if isinstance(eq, bytes) else str(eq)
        return einsum_flops(eq, [smap.shapes[x] for x in node.input])
    a, b, out = smap.shapes[node.input[0]], smap.shapes[node.input[1]], smap.shapes[node.output[0]]
    if op == "MatMul":
        return 2 * math.prod(out) * int(a[-1])
    if op == "Gemm":
        k = a[0] if _attr(node, "transA", 0) else a[1]
        return 2 * math.prod(out) * int(k)
    if op == "Conv":  # W: (Cout, Cin/group, *kernel)
        return 2 * math.prod(out) * math.prod(b[1:])
    if op == "ConvTranspose":  # W: (Cin, Cout/group, *kernel): each input element scatters into those
        return 2 * math.prod(a) * math.prod(b[1:])
    raise ValueError(f"not a tensor op: {op}")
