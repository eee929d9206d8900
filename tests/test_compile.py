"""The compile stage without TensorRT: deployments, build plan, profile table, the device script, skip path.

The ONNX files are tiny hand-made graphs with the real I/O names of backends/base.py (nothing is
exported), and the manifest is a fake one written with the real manifest helpers. The build itself
runs against the strict TensorRT emulation in tests/test_trt_emulation_e2e.py.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import onnx
import pytest
import yaml
from onnx import TensorProto, helper

from f5build import compile as comp
from f5build.context import add_common
from f5rt.backends.trt.engines import select_engines
from f5rt.backends.trt.profiles import choose_vocoder_profile, plan_profiles
from f5rt.buckets import Bucket, BucketTable
from f5rt.errors import ManifestError
from f5rt.manifest import file_entry, load_manifest, update_manifest

ROOT = Path(__file__).resolve().parents[1]
MEL, TEXT = 100, 16
F32, I32, BOOL = TensorProto.FLOAT, TensorProto.INT32, TensorProto.BOOL

# The graph contract as backends/base.py documents it, written out independently of the code under test.
CONTRACT = {
    "text_encoder": {
        "inputs": [("text_ids", I32, ["batch", "frames"]), ("mask", BOOL, ["batch", "frames"])],
        "outputs": [("text_cond", F32, ["batch", "frames", TEXT]), ("text_uncond", F32, ["batch", "frames", TEXT])],
    },
    "step": {
        "inputs": [
            ("x", F32, ["batch", "frames", MEL]),
            ("cond", F32, ["batch", "frames", MEL]),
            ("text_cond", F32, ["batch", "frames", TEXT]),
            ("text_uncond", F32, ["batch", "frames", TEXT]),
            ("mask", BOOL, ["batch", "frames"]),
            ("t", F32, ["batch"]),
            ("dt", F32, ["batch"]),
            ("cfg", F32, ["batch"]),
        ],
        "outputs": [("x_next", F32, ["batch", "frames", MEL])],
    },
    "vocoder": {
        "inputs": [("mel", F32, ["batch", MEL, "mel_frames"])],
        "outputs": [("audio", F32, ["batch", "samples"])],
    },
}


def make_onnx(
    graph: str, path: Path, inputs: list | None = None, opset: int = 17, ir_version: int = 8, extra_nodes=()
) -> Path:
    """A small valid ONNX graph with the contract's I/O (the ops only have to be well-formed).

    IR 8 / opset 17 as the exporter writes them (onnx's own default IR is newer than TensorRT 10.3 reads);
    `extra_nodes` are appended unchecked (nodes of other domains)."""
    c = CONTRACT[graph]
    ins = [helper.make_tensor_value_info(n, t, s) for n, t, s in (inputs or c["inputs"])]
    outs = [helper.make_tensor_value_info(n, t, s) for n, t, s in c["outputs"]]
    const = lambda name, vals: helper.make_tensor(name, TensorProto.INT64, [len(vals)], vals)  # noqa: E731
    if graph == "text_encoder":
        inits = [const("axes", [2]), const("width", [1, 1, TEXT])]
        nodes = [
            helper.make_node("Cast", ["text_ids"], ["ids_f"], to=F32),
            helper.make_node("Unsqueeze", ["ids_f", "axes"], ["ids3"]),
            helper.make_node("Expand", ["ids3", "width"], ["text_cond"]),
            helper.make_node("Neg", ["text_cond"], ["text_uncond"]),
        ]
    elif graph == "step":
        inits = []
        nodes = [helper.make_node("Identity", ["x"], ["x_next"])]
    else:
        inits = [const("c_axis", [1]), const("axes", [2]), const("hop", [1, 1, 256]), const("flat", [0, -1])]
        nodes = [
            helper.make_node("ReduceSum", ["mel", "c_axis"], ["frames"], keepdims=0),
            helper.make_node("Unsqueeze", ["frames", "axes"], ["f3"]),
            helper.make_node("Expand", ["f3", "hop"], ["hops"]),
            helper.make_node("Reshape", ["hops", "flat"], ["audio"]),
        ]
    model = helper.make_model(
        helper.make_graph(nodes, graph, ins, outs, inits),
        opset_imports=[helper.make_opsetid("", opset)],
        ir_version=ir_version,
    )
    onnx.checker.check_model(model)
    for domain, node in extra_nodes:
        model.graph.node.append(node)
        if domain not in {o.domain for o in model.opset_import}:
            model.opset_import.append(helper.make_opsetid(domain, 1))
    onnx.save(model, path)
    return path


def make_artifacts(
    root: Path, frames=(256, 512), batch=(1, 2), step_precisions=("fp32", "fp16", "int8"), vocoder=("fp32", "fp16")
) -> Path:
    """artifacts/fake: ONNX files for every graph (step and vocoder at several precisions) and their manifest."""
    art = root / "fake"
    art.mkdir(parents=True)
    files = {}
    sources = [("text_encoder", "fp32"), *(("step", p) for p in step_precisions), *(("vocoder", p) for p in vocoder)]
    for graph, precision in sources:
        rel = f"{graph}.onnx" if precision == "fp32" else f"{graph}.{precision}.onnx"
        make_onnx(graph, art / rel)
        files[rel] = file_entry(art, rel, graph=graph, precision=precision, kind="onnx", stage="export")

    def mutate(d: dict) -> None:
        d.update(
            name="fake",
            model={"dim": 64, "depth": 2, "heads": 2, "text_dim": TEXT, "mel_dim": MEL, "vocab_size": 10},
            audio={"sample_rate": 24000, "hop_length": 256, "n_fft": 1024, "win_length": 1024, "n_mels": MEL},
            buckets={"frames": list(frames), "batch": list(batch)},
            files=files,
        )

    update_manifest(art, mutate)
    return art


def stage_args(art: Path, *extra: str) -> comp.CompileOptions:
    """The stage's options as the command line builds them (f5build.cli converts once, at the boundary)."""
    p = argparse.ArgumentParser()
    add_common(p)
    comp.add_arguments(p)
    return comp.CompileOptions.from_args(
        p.parse_args(["--artifacts-root", str(art.parent), "--name", art.name, *extra])
    )


def config_buckets() -> BucketTable:
    return BucketTable.from_dict(yaml.safe_load((ROOT / "config" / "buckets.yaml").read_text()))


def graph_io(graph: str) -> comp.GraphIO:
    c = CONTRACT[graph]
    names = {F32: "float32", I32: "int32", BOOL: "bool"}
    return comp.GraphIO({n: (tuple(s), names[t]) for n, t, s in c["inputs"]}, {n: names[t] for n, t, _ in c["outputs"]})


@pytest.fixture
def no_tensorrt(monkeypatch: pytest.MonkeyPatch) -> None:
    """TensorRT absent even where it is installed (a None entry makes `import tensorrt` fail)."""
    monkeypatch.setitem(sys.modules, "tensorrt", None)


# --- profile table --------------------------------------------------------------------------------


def test_step_profiles_from_bucket_config_are_fixed_shapes() -> None:
    buckets = config_buckets()
    table = comp.profile_table("step", graph_io("step"), buckets, MEL, TEXT)
    assert len(table) == len(buckets) == 24
    assert [(p["frames"], p["batch"]) for p in table] == [(b.frames, b.batch) for b in buckets]
    assert [p["index"] for p in table] == list(range(24))
    for p in table:
        b, n = p["batch"], p["frames"]
        assert set(p["shapes"]) == {name for name, _, _ in CONTRACT["step"]["inputs"]}
        for s in p["shapes"].values():
            assert s["min"] == s["opt"] == s["max"]
        assert p["shapes"]["x"]["opt"] == [b, n, MEL]
        assert p["shapes"]["text_uncond"]["opt"] == [b, n, TEXT]
        assert p["shapes"]["mask"]["opt"] == [b, n]
        assert p["shapes"]["cfg"]["opt"] == [b]


def test_vocoder_profiles_cover_every_frame_count_once() -> None:
    buckets = config_buckets()
    table = comp.profile_table("vocoder", graph_io("vocoder"), buckets, MEL, TEXT)
    assert len(table) == 24
    for b in buckets.batch:
        rows = [p for p in table if p["batch"] == b]
        covered = [f for p in rows for f in range(p["shapes"]["mel"]["min"][2], p["shapes"]["mel"]["max"][2] + 1)]
        assert covered == list(range(1, buckets.max_frames + 1))  # no gap, no overlap
        for p in rows:
            assert p["shapes"]["mel"]["opt"] == p["shapes"]["mel"]["max"] == [b, MEL, p["frames"]]
    # the runtime picks the profile whose range holds the length: agree with the table
    profiles = plan_profiles("vocoder", buckets)
    for frames in (1, 256, 257, 700, 2816):
        p = choose_vocoder_profile(profiles, frames, 3)
        row = table[p.index]
        assert row["batch"] == 4 and row["shapes"]["mel"]["min"][2] <= frames <= row["shapes"]["mel"]["max"][2]


def test_graph_io_is_checked_against_the_contract() -> None:
    buckets = config_buckets()
    io = graph_io("step")
    static = comp.GraphIO({**io.inputs, "x": ((1, 512, MEL), "float32")}, io.outputs)
    with pytest.raises(ValueError, match=r"input x axis 0 \(B\) is static"):
        comp.profile_table("step", static, buckets, MEL, TEXT)
    missing = comp.GraphIO({k: v for k, v in io.inputs.items() if k != "cfg"}, io.outputs)
    with pytest.raises(ValueError, match=r"inputs are .* expected .*'cfg'"):
        comp.profile_table("step", missing, buckets, MEL, TEXT)
    wrong_c = comp.GraphIO({**io.inputs, "cond": (("batch", "frames", 80), "float32")}, io.outputs)
    with pytest.raises(ValueError, match="axis 2 is 80, the manifest's model says 100"):
        comp.profile_table("step", wrong_c, buckets, MEL, TEXT)
    te = graph_io("text_encoder")
    int64 = comp.GraphIO({**te.inputs, "text_ids": (("batch", "frames"), "int64")}, te.outputs)
    with pytest.raises(ValueError, match="text_ids is int64, the contract says int32"):
        comp.profile_table("text_encoder", int64, buckets, MEL, TEXT)


def test_read_graph_io_reads_a_real_onnx_file(tmp_path: Path) -> None:
    io = comp.read_graph_io(make_onnx("step", tmp_path / "step.onnx"))
    assert io.inputs["x"] == (("batch", "frames", MEL), "float32")
    assert io.inputs["mask"] == (("batch", "frames"), "bool")
    assert io.outputs == {"x_next": "float32"}


# --- ONNX opset / IR version against the target TensorRT's parser ---------------------------------


def test_onnx_limits_table() -> None:
    assert comp.DEFAULT_TRT_TARGET == "10.3"
    lim = comp.onnx_limits("10.3.0.30")  # a full TensorRT version picks its major.minor row
    assert (lim.tensorrt, lim.min_opset, lim.max_opset, lim.max_ir_version) == ("10.3", 9, 20, 10)
    assert lim.domains == {"", "ai.onnx"}
    with pytest.raises(ValueError, match=r"no ONNX limits known for TensorRT 8.6 .*ONNX_LIMITS"):
        comp.onnx_limits("8.6")


def test_onnx_versions_the_parser_reads_pass(tmp_path: Path) -> None:
    lim = comp.onnx_limits("10.3")
    for opset, ir in ((17, 8), (19, 10), (20, 10)):  # export's, quantize's (FP16 Q/DQ scales need 19), the limits
        io = comp.read_graph_io(make_onnx("step", tmp_path / f"s{opset}.onnx", opset=opset, ir_version=ir))
        assert (io.ir_version, io.opsets, io.node_domains) == (ir, {"": opset}, {""})
        comp.check_onnx_version(io, lim, f"s{opset}.onnx")
    # a foreign domain imported but used by no node is harmless
    unused = make_onnx("step", tmp_path / "unused.onnx")
    m = onnx.load(unused)
    m.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    onnx.save(m, unused)
    comp.check_onnx_version(comp.read_graph_io(unused), lim, "unused.onnx")


def test_onnx_newer_than_the_parser_is_refused_naming_it(tmp_path: Path) -> None:
    lim = comp.onnx_limits("10.3")
    io = comp.read_graph_io(make_onnx("step", tmp_path / "step.onnx", opset=21))
    with pytest.raises(
        ValueError, match=r"step.onnx: TensorRT 10.3's ONNX parser supports opset 9 to 20, the file has opset 21"
    ):
        comp.check_onnx_version(io, lim, "step.onnx")
    io = comp.read_graph_io(make_onnx("step", tmp_path / "ir11.onnx", ir_version=11))
    with pytest.raises(
        ValueError, match=r"ir11.onnx: TensorRT 10.3's ONNX parser reads IR version <= 10, the file has IR version 11"
    ):
        comp.check_onnx_version(io, lim, "ir11.onnx")
    io = comp.read_graph_io(make_onnx("step", tmp_path / "old.onnx", opset=8, ir_version=3))
    with pytest.raises(ValueError, match="supports opset 9 to 20, the file has opset 8"):
        comp.check_onnx_version(io, lim, "old.onnx")
    ms = helper.make_node("FusedMatMul", ["x", "x"], ["y"], domain="com.microsoft")
    io = comp.read_graph_io(make_onnx("step", tmp_path / "ms.onnx", extra_nodes=[("com.microsoft", ms)]))
    assert io.node_domains == {"", "com.microsoft"}
    with pytest.raises(
        ValueError,
        match=r"ms.onnx: TensorRT 10.3's ONNX parser does not know the opset domain\(s\) \['com.microsoft'\]",
    ):
        comp.check_onnx_version(io, lim, "ms.onnx")
    # a hand-made GraphIO carries no versions: refused rather than passed unchecked
    with pytest.raises(ValueError, match="not read; use read_graph_io"):
        comp.check_onnx_version(graph_io("step"), lim, "step.onnx")


@pytest.mark.parametrize(
    ("opset", "ir", "says"), [(21, 8, "the file has opset 21"), (19, 11, "the file has IR version 11")]
)
def test_the_stage_refuses_an_onnx_the_target_cannot_parse(
    tmp_path: Path, no_tensorrt: None, opset: int, ir: int, says: str
) -> None:
    art = make_artifacts(tmp_path)
    make_onnx("step", art / "step.int8.onnx", opset=opset, ir_version=ir)
    update_manifest(art, lambda d: d["files"].__setitem__(
        "step.int8.onnx", file_entry(art, "step.int8.onnx", graph="step", precision="int8", kind="onnx", stage="export")
    ))  # fmt: skip
    with pytest.raises(ValueError, match=rf"step.int8.onnx: TensorRT 10.3's ONNX parser .*{says}"):
        comp.run(stage_args(art))
    assert not (art / "engines" / "build_plan.json").exists()  # nothing planned
    assert comp.run(stage_args(art, "--trt-precision", "fp16")) == 0  # the other graphs are fine
    plan = json.loads((art / "engines" / "build_plan.json").read_text())
    assert plan["onnx_checked_for"] == {
        "tensorrt": "10.3", "min_opset": 9, "max_opset": 20, "max_ir_version": 10, "domains": ["", "ai.onnx"]
    }  # fmt: skip
    with pytest.raises(SystemExit):  # an unknown target is an argument error
        stage_args(art, "--trt-target", "8.6")


# --- the stage without TensorRT -------------------------------------------------------------------


def test_without_tensorrt_the_stage_plans_the_default_deployment_and_exits_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_tensorrt: None
) -> None:
    art = make_artifacts(tmp_path)
    assert comp.run(stage_args(art)) == 0
    out = capsys.readouterr().out
    assert "plan: 3 engines, 12 profiles (deployment int8)" in out  # only what is deployed
    assert "TensorRT not found" in out and "build_engines.sh" in out
    assert "differs from the manifest's bucket table" in out  # config/buckets.yaml is not this fake table

    plan = json.loads((art / "engines" / "build_plan.json").read_text())
    got = [(e["graph"], e["precision"], e["engine"]) for e in plan["engines"]]
    assert got == [
        ("text_encoder", "fp32", "engines/text_encoder.fp32.engine"),
        ("step", "int8", "engines/step.int8.engine"),
        ("vocoder", "fp16", "engines/vocoder.fp16.engine"),  # INT8 vocoders are not deployed
    ]
    assert plan["deployments"] == {"int8": {"text_encoder": "fp32", "step": "int8", "vocoder": "fp16"}}
    m = load_manifest(art)
    for e in plan["engines"]:
        assert e["onnx_sha256"] == m.files[e["onnx"]]["sha256"]
        assert len(e["profiles"]) == 4
    # TF32 on for the FP32 layers (TensorRT's default; Polygraphy's CreateConfig used to clear it)
    assert plan["options"] == {"opt_level": 3, "workspace_gib": 4.0, "tf32": True, "strongly_typed": True}
    assert plan["timing_cache"] == "engines/timing.cache"
    stage = m.data["stages"]["compile"]
    assert stage["status"] == "planned" and stage["tools"]["tensorrt"] is None
    assert stage["plan"] == "engines/build_plan.json"
    assert m.precisions("step", "engine") == [] and "deployments" not in m.data  # nothing pretends to be built
    # a second run writes the same plan (deterministic) and keeps the stage planned
    before = (art / "engines" / "build_plan.json").read_bytes()
    assert comp.run(stage_args(art)) == 0
    assert (art / "engines" / "build_plan.json").read_bytes() == before


def test_tensorrt_stubs_namespace_counts_as_no_tensorrt(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", types.ModuleType("tensorrt"))  # what tensorrt-stubs leaves
    art = make_artifacts(tmp_path)
    assert comp.run(stage_args(art)) == 0
    assert "TensorRT not found" in capsys.readouterr().out


def test_deployments_options_and_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str], no_tensorrt: None) -> None:
    art = make_artifacts(tmp_path)
    args = stage_args(
        art, "--trt-precision", "fp16,int8", "--trt-opt-level", "5", "--trt-workspace-gib", "1.5", "--trt-no-tf32"
    )
    assert comp.run(args) == 0
    assert "plan: 4 engines, 16 profiles (deployment fp16, int8)" in capsys.readouterr().out
    plan = json.loads((art / "engines" / "build_plan.json").read_text())
    assert [(e["graph"], e["precision"]) for e in plan["engines"]] == [
        ("text_encoder", "fp32"),  # shared by both deployments: built once
        ("step", "fp16"),
        ("step", "int8"),
        ("vocoder", "fp16"),
    ]
    assert plan["options"] == {"opt_level": 5, "workspace_gib": 1.5, "tf32": False, "strongly_typed": True}
    with pytest.raises(ValueError, match=r"unknown deployment\(s\) \['int4'\]"):
        comp.run(stage_args(art, "--trt-precision", "int4"))
    with pytest.raises(ValueError, match="must be 0..5"):
        comp.run(stage_args(art, "--trt-opt-level", "7"))
    art2 = make_artifacts(tmp_path / "b", step_precisions=("fp32",))
    with pytest.raises(
        ManifestError, match=r"deployment int8 needs a int8 step ONNX \(have fp32\); run `nox -s quantize`"
    ):
        comp.run(stage_args(art2))
    bad = tmp_path / "recipe.yaml"
    bad.write_text(yaml.safe_dump({"deployments": {"default": "x", "x": {"step": "int8"}}}))
    with pytest.raises(ValueError, match="deployment 'x' must give a precision for exactly"):
        comp.run(stage_args(art, "--trt-recipe", str(bad)))


def test_the_recipe_defines_the_deployments_the_runtime_expects() -> None:
    table, default = comp.read_deployments(ROOT / "config" / "precision.yaml")
    assert default == "int8"
    assert {n: d.to_dict() for n, d in table.items()} == {
        "fp32": {"text_encoder": "fp32", "step": "fp32", "vocoder": "fp32"},
        "fp16": {"text_encoder": "fp32", "step": "fp16", "vocoder": "fp16"},
        "int8": {"text_encoder": "fp32", "step": "int8", "vocoder": "fp16"},
    }


# --- the device script ----------------------------------------------------------------------------


def test_build_script_checks_its_prerequisites_and_builds_the_plan(tmp_path: Path, no_tensorrt: None) -> None:
    art = make_artifacts(tmp_path)
    comp.run(stage_args(art))
    script = art / "engines" / "build_engines.sh"
    assert script.stat().st_mode & 0o111
    subprocess.run(["bash", "-n", str(script)], check=True)
    lines = script.read_text().splitlines()
    assert 'cd "$(dirname "$0")/.."' in lines
    assert lines[-1].startswith('exec "$PY" -m f5build.compile') and lines[-1].endswith("--trt-from-plan")
    assert "# 3 engines, 12 profiles (deployment int8)." in lines
    # A bare interpreter (no TensorRT, no f5rt): the script names what is missing and builds nothing.
    bare = tmp_path / "bare"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True)
    proc = subprocess.run(
        ["bash", str(script)],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "PYTHON": str(bare / "bin" / "python")},
    )
    assert proc.returncode == 2
    for what in ("TensorRT's Python bindings (JetPack: sudo apt install python3-libnvinfer)", "cuda-python for this driver",
                 "f5rt (from the f5-aot checkout", "f5build (from the f5-aot checkout"):  # fmt: skip
        assert f"build_engines.sh: missing {what}" in proc.stderr
    assert not list((art / "engines").glob("*.engine"))


def test_from_plan_without_tensorrt_fails_clearly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_tensorrt: None
) -> None:
    art = make_artifacts(tmp_path)
    with pytest.raises(ManifestError, match="no build plan"):
        comp.run(stage_args(art, "--trt-from-plan"))
    comp.run(stage_args(art))
    assert comp.run(stage_args(art, "--trt-from-plan")) == 2
    assert "TensorRT not found" in capsys.readouterr().out
    (art / "step.int8.onnx").write_bytes(b"changed")
    with pytest.raises(ManifestError, match="does not match the manifest"):
        comp.run(stage_args(art, "--trt-from-plan"))


# --- manifest records: what the build writes is what the runtime accepts ---------------------------


def test_recorded_engines_pass_the_runtime_checks(tmp_path: Path, no_tensorrt: None) -> None:
    art = make_artifacts(tmp_path)
    comp.run(stage_args(art))
    plan = json.loads((art / "engines" / "build_plan.json").read_text())
    options = comp.BuildOptions(**plan["options"])
    target = comp.Target(tensorrt="10.3.0.30", cuda="12.6", gpu="Orin", sm="8.7")
    for i, e in enumerate(plan["engines"]):
        (art / e["engine"]).write_bytes(np.random.default_rng(i).bytes(64))
        comp.record_engine(art, e, options, target)
    comp.record_deployments(art, plan)
    m = load_manifest(art)
    meta = m.files["engines/step.int8.engine"]
    assert meta["kind"] == "engine" and meta["stage"] == "compile" and meta["precision"] == "int8"
    assert (meta["tensorrt"], meta["cuda"], meta["gpu"], meta["sm"]) == ("10.3.0.30", "12.6", "Orin", "8.7")
    assert meta["onnx_sha256"] == m.files["step.int8.onnx"]["sha256"]
    assert m.precisions("step", "engine") == ["int8"] and m.data["deployments"] == plan["deployments"]

    chosen = select_engines(m, "int8", tensorrt_version="10.3.0.30", sm="8.7")
    assert {g: c.precision for g, c in chosen.items()} == {"text_encoder": "fp32", "step": "int8", "vocoder": "fp16"}
    assert chosen["step"].profile_for(Bucket(512, 2)).index == 3
    with pytest.raises(ManifestError, match="TensorRT 10.3.0.30, this runtime has TensorRT 10.4"):
        select_engines(m, "int8", tensorrt_version="10.4.0.1", sm="8.7")

    e = plan["engines"][1]
    assert comp.up_to_date(m, e, options, target)
    assert not comp.up_to_date(m, {**e, "onnx_sha256": "0" * 64}, options, target)
    assert not comp.up_to_date(m, e, comp.BuildOptions(opt_level=5), target)
    assert not comp.up_to_date(m, e, options, comp.Target("10.3.0.30", "12.6", "H100", "9.0"))


def test_plan_for_the_real_tiny_export(tiny_artifacts: Path, tmp_path: Path, no_tensorrt: None) -> None:
    """The exporter's real graphs satisfy the contract the engines and the runtime assume."""
    import shutil

    art = tmp_path / "tiny"
    shutil.copytree(tiny_artifacts, art)
    assert comp.run(stage_args(art, "--trt-precision", "fp32")) == 0  # the tests' export has FP32 graphs only
    plan = json.loads((art / "engines" / "build_plan.json").read_text())
    m = load_manifest(art)
    assert {e["graph"] for e in plan["engines"]} == {"text_encoder", "step", "vocoder"}
    assert plan["onnx_checked_for"]["tensorrt"] == "10.3"  # every exported graph suits TensorRT 10.3's parser
    for e in plan["engines"]:
        io = comp.read_graph_io(art / e["onnx"])
        assert io.ir_version <= 10 and io.opsets.get("", 0) <= 20 and io.node_domains == {""}, e["onnx"]
    text_dim = m.model["text_dim"]
    for e in plan["engines"]:
        assert len(e["profiles"]) == len(m.buckets)
        if e["graph"] == "step":
            b, n = e["profiles"][-1]["batch"], e["profiles"][-1]["frames"]
            assert e["profiles"][-1]["shapes"]["text_cond"]["max"] == [b, n, text_dim]


def test_building_a_plan_checked_for_another_tensorrt_is_refused() -> None:
    plan = {"onnx_checked_for": {"tensorrt": "10.3"}}
    comp.check_plan_target(plan, comp.Target("10.3.0.30", "12.6", "Orin", "8.7"))
    with pytest.raises(
        ManifestError, match=r"checked for TensorRT 10\.3's ONNX parser, this device has TensorRT 10\.7\.0\.23"
    ):
        comp.check_plan_target(plan, comp.Target("10.7.0.23", "12.8", "RTX 4090", "8.9"))
    with pytest.raises(
        ManifestError, match=r"add TensorRT 10\.7's parser limits to f5build\.compile\.ONNX_LIMITS, then re-run"
    ):
        comp.check_plan_target(plan, comp.Target("10.7.0.23", "12.8", "RTX 4090", "8.9"))


def test_tensorrt_older_than_10_plans_only_and_names_jetpack(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = types.ModuleType("tensorrt")
    fake.Builder = object
    fake.__version__ = "8.6.2.3"  # JetPack 6.0
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    art = make_artifacts(tmp_path)
    assert comp.run(stage_args(art)) == 0
    assert "TensorRT 8.6.2.3 is too old" in capsys.readouterr().out
    assert load_manifest(art).data["stages"]["compile"]["status"] == "planned"
    assert comp.run(stage_args(art, "--trt-from-plan")) == 2  # on the device: a refusal, not a build
