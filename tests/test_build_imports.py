"""The build's import structure (issue 23): stage modules take paths and shared options from
`f5build.context`, never from the CLI that loads them, and nothing outside f5rt imports the runtime's
private `f5rt._fs` (its public form is `f5rt.files`)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "build" / "f5build"


def imports(path: Path) -> set[str]:
    """Every module `path` imports (absolute names), at any depth of the file."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
    return out


def test_no_build_module_imports_the_cli_back():
    offenders = [
        str(p.relative_to(ROOT))
        for p in sorted(BUILD.rglob("*.py"))
        if p.name != "__main__.py" and p != BUILD / "cli.py" and any(m.startswith("f5build.cli") for m in imports(p))
    ]
    assert offenders == [], f"import f5build.context instead of f5build.cli in {offenders}"


def test_no_module_outside_the_runtime_imports_its_private_fs():
    tree = [*BUILD.rglob("*.py"), *(ROOT / "tests").rglob("*.py"), ROOT / "noxfile.py"]
    offenders = [str(p.relative_to(ROOT)) for p in sorted(tree) if any(m.startswith("f5rt._fs") for m in imports(p))]
    assert offenders == [], f"use the public f5rt.files in {offenders}"


def test_the_checks_see_a_violation(tmp_path):
    """The scanner itself: both kinds of import, at module level and inside a function, are found."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from f5build.cli import ROOT\n    import f5rt._fs\n")
    found = imports(bad)
    assert "f5build.cli" in found and "f5rt._fs" in found
