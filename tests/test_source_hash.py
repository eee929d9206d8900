"""Stage up-to-date checks hash whole packages, so renaming or adding a module invalidates outputs."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import f5build
import f5rt
from f5build.common import package_hash, source_hash

BUILD = Path(f5build.__file__).parent


@pytest.fixture
def pkg(tmp_path: Path) -> Path:
    """A private copy of the f5build source (the tests change it)."""
    return Path(shutil.copytree(BUILD, tmp_path / "f5build", ignore=shutil.ignore_patterns("__pycache__", "*.pyc")))


def test_renaming_a_module_changes_the_hash(pkg: Path) -> None:
    h0 = package_hash(pkg)
    assert package_hash(pkg) == h0  # deterministic
    (pkg / "recordings.py").rename(pkg / "recording_format.py")
    assert package_hash(pkg) != h0  # same bytes under another name: still a change
    (pkg / "recording_format.py").rename(pkg / "recordings.py")
    assert package_hash(pkg) == h0


def test_adding_removing_and_editing_modules_change_the_hash(pkg: Path) -> None:
    h0 = package_hash(pkg)
    (pkg / "extra.py").write_text("X = 1\n")
    assert package_hash(pkg) != h0
    (pkg / "extra.py").unlink()
    assert package_hash(pkg) == h0
    gates = pkg / "validate" / "gates.py"  # a module of a subpackage counts too
    gates.write_text(gates.read_text() + "\n# edited\n")
    assert package_hash(pkg) != h0


def test_moving_code_between_modules_changes_the_hash(tmp_path: Path) -> None:
    """Paths and lengths are framed: the same concatenated bytes split differently hash differently."""
    a, b = tmp_path / "a", tmp_path / "b"
    for d, (x, y) in ((a, ("X = 1\nY = 2\n", "")), (b, ("X = 1\n", "Y = 2\n"))):
        d.mkdir()
        (d / "m1.py").write_text(x)
        (d / "m2.py").write_text(y)
    assert package_hash(a) != package_hash(b)


def test_caches_and_other_files_do_not_count(pkg: Path) -> None:
    h0 = package_hash(pkg)
    (pkg / "__pycache__").mkdir(exist_ok=True)
    (pkg / "__pycache__" / "stale.py").write_text("junk\n")
    (pkg / "notes.txt").write_text("not source\n")
    assert package_hash(pkg) == h0


def test_empty_folder_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no Python source"):
        package_hash(tmp_path)


def test_stage_code_hash_is_the_whole_package() -> None:
    assert source_hash() == package_hash(BUILD)
    with_runtime = source_hash(runtime=True)
    assert with_runtime != source_hash()
    assert package_hash(Path(f5rt.__file__).parent) != package_hash(BUILD)
