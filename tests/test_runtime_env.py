"""What the runtime promises about where it runs: every f5rt module imports without torch, f5-tts
or f5build, and `nox -s runtime` really is Python 3.10 (JetPack 6) with none of the build side.

The import check runs in a fresh interpreter: in the test process other tests may already have
imported torch, which would hide a runtime module that pulls it in.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest

BUILD_SIDE = ("torch", "torchaudio", "f5_tts", "f5build")
# Imported lazily or only by an extra: the TensorRT / CUDA layer finds them at run time, and PyAV is
# the `aac` extra, which `nox -s runtime` does not install. Any other missing module is a failure.
OPTIONAL = {"tensorrt", "cuda", "av"}

IMPORT_EVERY_MODULE = """
import importlib, json, pkgutil, sys
import f5rt

missing, errors = {}, {}
for info in pkgutil.walk_packages(f5rt.__path__, "f5rt."):
    if info.name.endswith(".__main__"):  # importing one runs its program
        continue
    try:
        importlib.import_module(info.name)
    except ModuleNotFoundError as e:
        missing[info.name] = e.name
    except Exception as e:
        errors[info.name] = f"{type(e).__name__}: {e}"
roots = {name.partition(".")[0] for name in sys.modules}
print(json.dumps({"missing": missing, "errors": errors, "roots": sorted(roots)}))
"""


def test_every_runtime_module_imports_without_the_build_side() -> None:
    done = subprocess.run([sys.executable, "-c", IMPORT_EVERY_MODULE], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["errors"] == {}, "f5rt modules that fail to import on this Python"
    not_optional = {m: name for m, name in result["missing"].items() if name.partition(".")[0] not in OPTIONAL}
    assert not_optional == {}, "f5rt modules that need a package the runtime does not declare"
    assert "f5rt.server" not in result["missing"], "the serve extra is installed in every test env"
    pulled = sorted(set(BUILD_SIDE) & set(result["roots"]))
    assert pulled == [], f"importing f5rt pulled in the build side: {pulled}"


@pytest.mark.skipif(not os.environ.get("F5RT_RUNTIME_ONLY"), reason="only in `nox -s runtime` (F5RT_RUNTIME_ONLY=1)")
def test_runtime_env_is_python_3_10_without_the_build_side() -> None:
    assert sys.version_info[:2] == (3, 10), f"`nox -s runtime` runs on JetPack 6's Python 3.10, not {sys.version}"
    present = [name for name in BUILD_SIDE if importlib.util.find_spec(name) is not None]
    assert present == [], f"the runtime env must not have {present}: check runtime/pyproject.toml"
