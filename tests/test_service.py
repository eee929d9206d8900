"""The serving core (f5rt.service) and its two adapters: one set of rules, one set of messages.

- the import graph: the Triton models load nothing of the HTTP server, the core neither transport;
- the same bad request gets the same message (and a 4xx / INVALID_ARG) over HTTP and Triton;
- one schedule key and one grouping: rows of another schedule never share an engine call;
- `auto` precision resolved in one place, and the Synthesizer's public surface is what a user calls.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from f5rt.limits import Limits
from f5rt.options import ScheduleKey, SynthesisOptions
from f5rt.service.errors import ServiceError, map_error
from f5rt.service.work import ChunkWork, group_by_schedule
from f5rt.triton.requests import INPUTS, parse_request, triton_code
from f5rt.voices import VoiceStore

RUNTIME = Path(__file__).resolve().parents[1] / "runtime" / "f5rt"


# ---------------------------------------------------------------------------------------------
# import graph
# ---------------------------------------------------------------------------------------------


def imported_modules(path: Path) -> set[str]:
    """Every module a source file imports, at any depth of the file (lazy imports included)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
    return out


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("triton", ("f5rt.server", "fastapi", "starlette", "uvicorn")),
        ("service", ("f5rt.server", "f5rt.triton", "fastapi", "starlette", "uvicorn", "triton_python_backend_utils")),
    ],
)
def test_import_graph_keeps_transports_apart(package: str, forbidden: tuple[str, ...]) -> None:
    files = sorted((RUNTIME / package).glob("*.py"))
    assert files, f"no sources under {RUNTIME / package}"
    bad = {
        f"{f.name}: {m}"
        for f in files
        for m in imported_modules(f)
        if any(m == x or m.startswith(x + ".") for x in forbidden)
    }
    assert not bad, f"f5rt.{package} must not import {forbidden}: {sorted(bad)}"


def test_loading_the_triton_models_loads_no_http_server() -> None:
    """What Triton's stub imports (model.py imports f5rt.triton.model) pulls in no f5rt.server module."""
    code = (
        "import sys, json, f5rt.triton.model, f5rt.triton.requests, f5rt.triton.repository;"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith(('f5rt.', 'fastapi', 'starlette')))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    loaded = json.loads(out)
    assert "f5rt.service.requests" in loaded and "f5rt.triton.model" in loaded  # the check sees real imports
    assert not [m for m in loaded if m.startswith(("f5rt.server", "fastapi", "starlette"))], loaded


# ---------------------------------------------------------------------------------------------
# the same message over HTTP and Triton
# ---------------------------------------------------------------------------------------------


def tensors(body: dict[str, Any]) -> dict[str, np.ndarray | None]:
    """The Triton input tensors standing for an /api/tts body ([1, 1], the configured dtypes)."""
    dtypes = {"str": object, "int": np.int64, "float": np.float32}
    out: dict[str, np.ndarray | None] = {}
    for name, value in body.items():
        kind = INPUTS[name].kind
        if name == "nfe_step":
            out[name] = np.array([[value]], dtype=np.int32)
        elif kind == "str":
            out[name] = np.array([[value.encode("utf-8")]], dtype=object)
        else:
            out[name] = np.array([[value]], dtype=dtypes[kind])
    return out


GOOD = {"text": "Hello there.", "voice_id": "alice", "seed": 1, "nfe_step": 6}
# name -> changes to GOOD (None: leave the field out)
BAD: dict[str, dict[str, Any]] = {
    "missing text": {"text": None},
    "empty text": {"text": "  \n "},
    "text over the limit": {"text": "a" * 4097},
    "control character": {"text": "hi\x07there"},
    "unknown voice": {"voice_id": "nobody"},
    "voice id with a path": {"voice_id": "../etc"},
    "speed out of range": {"speed": 9.0},
    "nfe_step out of range": {"nfe_step": 2},
    "nfe_step above the engine's": {"nfe_step": 65},
    "negative seed": {"seed": -5},
    "seed past the engine's": {"seed": 2**63},
}


@pytest.fixture(scope="module")
def http_client(tiny_artifacts: Path, voices_dir: Path) -> Iterator[Any]:
    pytest.importorskip("fastapi")
    from starlette.testclient import TestClient

    from f5rt.server import create_app
    from f5rt.synthesizer import Synthesizer

    with Synthesizer(tiny_artifacts, backend="onnxruntime", threads=1) as synth:
        app = create_app(synth, VoiceStore(voices_dir), Limits(), warmup=False)
        with TestClient(app) as client:
            yield client


@pytest.mark.parametrize("name", list(BAD))
def test_http_and_triton_give_the_same_message(name: str, http_client: Any, voices_dir: Path) -> None:
    body = {k: v for k, v in {**GOOD, **BAD[name]}.items() if v is not None}
    r = http_client.post("/api/tts", json=body)
    assert 400 <= r.status_code < 500, f"{name}: HTTP {r.status_code} {r.text}"
    http_message = r.json()["error"]["message"]
    if name == "seed past the engine's":  # an INT64 tensor cannot carry 2**63: HTTP's own case
        assert "seed must be -1 or within" in http_message
        return
    with pytest.raises(ServiceError) as e:
        parse_request(tensors(body), VoiceStore(voices_dir), SynthesisOptions(), Limits())
    assert e.value.message == http_message, name
    assert (e.value.status, e.value.code) == (r.status_code, r.json()["error"]["code"])
    assert triton_code(e.value) == "INVALID_ARG"


def test_a_good_request_parses_alike(voices_dir: Path) -> None:
    job = parse_request(tensors(GOOD), VoiceStore(voices_dir), SynthesisOptions(), Limits())
    assert (job.text, job.voice_id, job.options.nfe, job.options.seed) == ("Hello there.", "alice", 6, 1)


def test_error_status_decides_the_triton_code() -> None:
    assert triton_code(ServiceError(404, "voice_not_found", "x")) == "INVALID_ARG"
    assert triton_code(ServiceError(503, "overloaded", "x")) == "UNAVAILABLE"
    assert triton_code(TimeoutError("slow")) == "UNAVAILABLE"
    assert triton_code(RuntimeError("bug")) == "INTERNAL"
    assert map_error(ValueError("nfe must be ...")).status == 400


# ---------------------------------------------------------------------------------------------
# one schedule key, one grouping
# ---------------------------------------------------------------------------------------------


def work(frames: int, **options: Any) -> ChunkWork:
    plan = SimpleNamespace(frames=frames, text=f"{frames} frames")
    return ChunkWork(0, 0, plan, None, SynthesisOptions(**options), 0, frames)  # type: ignore[arg-type]


def test_rows_group_by_schedule_only() -> None:
    works = [
        work(300, nfe=6),
        work(100, nfe=6, cfg=3.0, speed=2.0, seed=9),  # cfg, speed, seed are per row: same schedule
        work(200, nfe=7),
        work(150, nfe=6, sway=None),
        work(50, nfe=6, use_epss=False),
        work(120, nfe=6),
    ]
    groups = group_by_schedule(works)
    assert groups == {
        ScheduleKey(6, -1.0, True): [1, 5, 0],  # shortest first
        ScheduleKey(7, -1.0, True): [2],
        ScheduleKey(6, None, True): [3],
        ScheduleKey(6, -1.0, False): [4],
    }


def test_engine_calls_never_mix_schedules(tiny_artifacts: Path, voices_dir: Path) -> None:
    """The batcher, synthesize_batch and Triton's batches all end in run_chunks: one call per schedule."""
    from f5rt.synthesizer import Synthesizer

    with Synthesizer(tiny_artifacts, backend="onnxruntime", threads=1) as synth:
        calls: list[int] = []
        sample = synth.backend.sample

        def spy(job: Any) -> np.ndarray:
            calls.append(len(job.t))
            return sample(job)

        synth.backend.sample = spy  # type: ignore[method-assign]
        voice = VoiceStore(voices_dir).get("alice")
        items = [("One.", voice, SynthesisOptions(nfe=n, seed=i)) for i, n in enumerate((4, 5, 4, 5))]
        synth.synthesize_batch(items)
    assert sorted(calls) == [4, 5], f"two schedules, two engine calls; got NFE per call {calls}"


# ---------------------------------------------------------------------------------------------
# precision, the public surface, `f5rt info`
# ---------------------------------------------------------------------------------------------


def test_auto_precision_is_resolved_in_one_place(tiny_artifacts: Path) -> None:
    from f5rt.backends import make_backend
    from f5rt.manifest import load_manifest
    from f5rt.precision import resolve

    m = load_manifest(tiny_artifacts)
    assert resolve(m, "onnxruntime", "auto") == "fp32"  # a plain export: nothing validated
    assert resolve(m, "tensorrt", "auto") == "int8"  # nothing compiled: the default deployment's name
    assert resolve(m, "onnxruntime", "cpu-int8") == "cpu-int8"  # named: the backend checks the files
    with pytest.raises(ValueError, match="is an ONNX Runtime graph"):
        resolve(m, "tensorrt", "cpu-fp32")
    with pytest.raises(ValueError, match="unknown precision 'int4'"):
        make_backend("onnxruntime", m, precision="int4")
    backend = make_backend("onnxruntime", m, precision="auto", threads=1)
    assert backend.precision == "fp32"
    backend.close()
    sources = {p.relative_to(RUNTIME).as_posix(): p.read_text(encoding="utf-8") for p in RUNTIME.rglob("*.py")}
    compares = sorted(
        name for name, src in sources.items() if "== AUTO" in src or '== "auto"' in src or "== 'auto'" in src
    )
    assert compares == ["precision.py", "triton/repository.py"], compares  # the writer's default: None or auto


def test_synthesizer_public_surface_is_what_a_user_calls() -> None:
    from f5rt.synthesizer import SynthesisEngine, Synthesizer

    public = {n for n in vars(Synthesizer) if not n.startswith("_")}
    assert public == {"load", "synthesize", "synthesize_batch", "stream", "voice_from_audio", "warmup", "close"}
    seam = {"plan_request", "run_chunks", "finish", "joiner", "padded_rows", "max_rows", "warmup"}
    assert seam <= set(vars(SynthesisEngine)), "the ChunkEngine seam lives on the engine"


def test_info_prints_each_graph_in_its_own_column(tiny_artifacts: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from f5rt.cli import main

    assert main(["info", "--artifacts", str(tiny_artifacts)]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = {line.split()[0]: line for line in lines if line.split() and line.split()[0] in ("text_encoder", "step")}
    assert set(rows) == {"text_encoder", "step"}, lines
    assert rows["text_encoder"].split()[1] == "onnx", rows["text_encoder"]
    assert rows["text_encoder"].index("onnx") == rows["step"].index("onnx"), "the columns line up"


def test_triton_config_inputs_are_the_request_fields() -> None:
    """The repository declares exactly the inputs the request parser reads, optional where the schema is."""
    from f5rt.triton.repository import _INPUTS
    from f5rt.triton.requests import REQUIRED

    assert [name for name, _, _ in _INPUTS] == list(INPUTS)
    assert {name for name, _, optional in _INPUTS if not optional} == set(REQUIRED)
