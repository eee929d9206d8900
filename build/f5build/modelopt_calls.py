"""The ModelOpt and ONNX Runtime calls of the quantize stage, with their logging kept quiet.

Kept apart from the stage (f5build.quantize) so that what is asked of ModelOpt (quantize_mode,
op types, exclusions, FP32 high precision, autocast's keep-FP32 rules and overflow guard) can be read
in one place, and so a ModelOpt upgrade touches one module. Every call runs on the CPU.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from f5build.recipe import GraphRecipe
from f5build.recordings import RecordedSamples

FP16_DATA_MAX = 512.0  # autocast keeps nodes whose |values| exceed this in FP32 (ModelOpt's default)
EXTERNAL_DATA_BYTES = 1_800_000_000  # protobuf's 2 GB limit, with margin


def calibration_reader(samples: RecordedSamples, idx: list[int]) -> Any:
    """An onnxruntime CalibrationDataReader over recorded samples (feeds of different shapes are fine)."""
    from onnxruntime.quantization.calibrate import CalibrationDataReader

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self.pos = 0

        def get_next(self) -> dict[str, np.ndarray] | None:
            if self.pos >= len(idx):
                return None
            self.pos += 1
            return samples.feed(idx[self.pos - 1])

        def get_first(self) -> dict[str, np.ndarray]:
            return samples.feed(idx[0])

        def rewind(self) -> None:
            self.pos = 0

        def __len__(self) -> int:
            return len(idx)

    return Reader()


class _DropNvml(logging.Filter):
    """ModelOpt logs an ERROR when it cannot count GPUs through NVML; on a CPU box that is expected."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "NVML" not in record.getMessage()


@contextlib.contextmanager
def _quiet() -> Iterator[io.StringIO]:
    """ModelOpt, ORT's quantizer and shape inference are chatty: keep errors, drop the rest."""
    buf = io.StringIO()
    names = (
        "",
        "modelopt",
        "modelopt.onnx",
        "modelopt.onnx.autocast",
        "onnxruntime",
        "onnxruntime.tools.symbolic_shape_infer",
    )
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    drop = _DropNvml()
    for lg in loggers:
        lg.setLevel(logging.ERROR)
        lg.addFilter(drop)
        for h in lg.handlers:
            h.addFilter(drop)
    try:
        with contextlib.redirect_stdout(buf):
            yield buf
    finally:
        for lg, lv in zip(loggers, levels, strict=True):
            lg.setLevel(lv)
            lg.removeFilter(drop)
            for h in lg.handlers:
                h.removeFilter(drop)


def autocast_fp16(src: Path, recipe: GraphRecipe, ref_dir: Path | None, extra_fp32: list[str]) -> Any:
    """FP16 everywhere except the recipe's keep-FP32 rules (and autocast's own overflow findings)."""
    from modelopt.onnx.autocast import convert_to_mixed_precision

    assert recipe.fp16 is not None
    with _quiet():
        return convert_to_mixed_precision(
            onnx_path=str(src),
            low_precision_type="fp16",
            keep_io_types=True,
            op_types_to_exclude=recipe.keep_fp32_op_types(),
            nodes_to_exclude=[*recipe.keep_fp32_nodes(), *extra_fp32],
            data_max=FP16_DATA_MAX if ref_dir is not None else np.inf,
            calibration_data=str(ref_dir) if ref_dir is not None else None,
            providers=["cpu"],
        )


def quantize_int8(
    src: Path, out: Path, recipe: GraphRecipe, reader: Any, method: str, extra_exclude: list[str]
) -> None:
    from modelopt.onnx.quantization import quantize

    assert recipe.int8 is not None
    # entropy calibration draws a tqdm bar per histogram pass on stderr: not a log line, dropped
    with _quiet(), contextlib.redirect_stderr(io.StringIO()):
        quantize(
            onnx_path=str(src),
            quantize_mode="int8",
            calibration_data_reader=reader,
            calibration_method=method,
            calibration_eps=["cpu"],
            op_types_to_quantize=list(recipe.int8.op_types),
            nodes_to_exclude=[*recipe.int8.exclude, *extra_exclude],
            high_precision_dtype="fp32",
            output_path=str(out),
            log_level="ERROR",
        )
    if not out.is_file():
        raise RuntimeError(f"ModelOpt wrote no model for {src.name} (no node selected for quantization?)")


def save_model(model: Any, path: Path) -> list[str]:
    """Save beside `path` (fsynced); graphs over protobuf's limit get `<name>.data`. Returns extra files.

    Written into the stage's temp folder inside artifacts/<name>, then moved over the old files with
    os.replace after the smoke run, so a reader never sees a half-written graph.
    """
    import onnx

    # ModelOpt's autocast lists value_info in set order, which varies with the interpreter's hash seed:
    # the same graph then hashed differently on every run, so every stage and stored score keyed on its
    # sha256 was redone. The order has no meaning; sorted, the same graph is the same bytes.
    infos = sorted(model.graph.value_info, key=lambda v: v.name)
    del model.graph.value_info[:]
    model.graph.value_info.extend(infos)
    extras: list[str] = []
    if model.ByteSize() > EXTERNAL_DATA_BYTES:
        extras.append(path.name + ".data")
        onnx.save_model(model, str(path), save_as_external_data=True, location=extras[0])
    else:
        onnx.save(model, str(path))
    for name in [path.name, *extras]:
        with open(path.parent / name, "rb+") as f:
            os.fsync(f.fileno())
    return extras


def smoke_run(path: Path, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    """One ONNX Runtime run: a graph that does not load or gives non-finite output is not recorded."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    outs = sess.run(None, feed)
    for o, meta in zip(outs, sess.get_outputs(), strict=True):
        if np.issubdtype(np.asarray(o).dtype, np.floating) and not np.all(np.isfinite(o)):
            raise ValueError(f"{path.name}: output {meta.name} is not finite on a recorded input")
    return outs
