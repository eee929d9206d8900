"""Bad inputs to the build: each ends in exit code 2 and exactly one line on stderr naming the file
and the problem, never a library traceback. Real damaged files: cut checkpoints, flipped bytes,
hand-edited YAML."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import yaml
from test_export import export_args, write_vocos  # the export command line; a Vocos folder as on the hub

from f5build.cli import main

ROOT = Path(__file__).resolve().parents[2]


def fails_with_one_line(capsys, argv: list[str], stage: str, path: Path, *words: str) -> str:
    rc = main(argv)
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2, err
    assert len(lines) == 1, err
    assert lines[0].startswith(f"f5build {stage}: error: {path}"), lines[0]
    for w in words:
        assert w in lines[0], lines[0]
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture(scope="module")
def checkpoint_set(tmp_path_factory, tiny_bundle):
    """The tiny model as a user downloads a real one: .safetensors, .pt, a Vocos folder, an arch YAML."""
    from f5build.load import TINY_ARCH

    d = tmp_path_factory.mktemp("ckpt")
    state = {
        f"ema_model.transformer.{k}": v.detach().clone().contiguous() for k, v in tiny_bundle.dit.state_dict().items()
    }
    from safetensors.torch import save_file

    save_file(state, str(d / "model.safetensors"))
    torch.save({"ema_model_state_dict": state}, d / "model.pt")
    write_vocos(d / "vocos", tiny_bundle.vocos)
    (d / "arch.yaml").write_text(yaml.safe_dump({"model": {"arch": dict(TINY_ARCH)}}))
    return d


def export_argv(ckpt: Path, d: Path, out: Path, *extra: str) -> list[str]:
    """test_export's export command line, for a checkpoint set laid out by `checkpoint_set`."""
    return export_args(ckpt, d / "vocos", d / "arch.yaml", out, *extra)


def cut(src: Path, dst: Path, fraction: float = 0.5) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * fraction)])
    return dst


def test_the_intact_checkpoint_exports(checkpoint_set, tmp_path, capsys):
    """The control: the same files, undamaged, export (so the failures below are the damage's)."""
    assert main(export_argv(checkpoint_set / "model.safetensors", checkpoint_set, tmp_path)) == 0


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_truncated_checkpoint(checkpoint_set, tmp_path, capsys, suffix):
    bad = cut(checkpoint_set / f"model{suffix}", tmp_path / f"model{suffix}")
    fails_with_one_line(
        capsys,
        export_argv(bad, checkpoint_set, tmp_path / "a"),
        "export",
        bad,
        "truncated or corrupt",
        "download it again",
    )
    assert not (tmp_path / "a" / "model").exists() or not any((tmp_path / "a" / "model").iterdir())


def test_corrupted_pt_bytes(checkpoint_set, tmp_path, capsys):
    data = bytearray((checkpoint_set / "model.pt").read_bytes())
    data[:64] = b"\x00" * 64  # the zip header gone
    bad = tmp_path / "model.pt"
    bad.write_bytes(bytes(data))
    fails_with_one_line(capsys, export_argv(bad, checkpoint_set, tmp_path / "a"), "export", bad, "truncated or corrupt")


def test_empty_checkpoint(checkpoint_set, tmp_path, capsys):
    bad = tmp_path / "model.safetensors"
    bad.write_bytes(b"")
    fails_with_one_line(capsys, export_argv(bad, checkpoint_set, tmp_path / "a"), "export", bad, "empty file")


def test_truncated_vocos_weights(checkpoint_set, tmp_path, capsys):
    d = tmp_path / "set"
    shutil.copytree(checkpoint_set, d)
    bad = cut(checkpoint_set / "vocos" / "pytorch_model.bin", d / "vocos" / "pytorch_model.bin", 0.3)
    fails_with_one_line(capsys, export_argv(d / "model.safetensors", d, tmp_path / "a"), "export", bad, "Vocos weights")


def test_vocos_config_with_a_wrong_field(checkpoint_set, tmp_path, capsys):
    d = tmp_path / "set"
    shutil.copytree(checkpoint_set, d)
    cfg = d / "vocos" / "config.yaml"
    cfg.write_text(cfg.read_text().replace("num_layers: 3", "num_layers: two"))
    fails_with_one_line(capsys, export_argv(d / "model.safetensors", d, tmp_path / "a"), "export", cfg, "num_layers")


def test_vocab_not_matching_the_checkpoint(checkpoint_set, tmp_path, capsys):
    from f5build.load import default_vocab_path

    vocab = tmp_path / "vocab.txt"
    vocab.write_text(default_vocab_path().read_text(encoding="utf-8") + "extra1\nextra2\n", encoding="utf-8")
    argv = export_argv(checkpoint_set / "model.safetensors", checkpoint_set, tmp_path / "a")
    argv[argv.index("--vocab") + 1] = str(vocab)
    line = fails_with_one_line(capsys, argv, "export", checkpoint_set / "model.safetensors", "vocab", "--vocab")
    assert str(vocab) in line


def test_vocab_that_is_not_text(checkpoint_set, tmp_path, capsys):
    vocab = tmp_path / "vocab.txt"
    vocab.write_bytes(b" \n\xff\xfe\x00binary")
    argv = export_argv(checkpoint_set / "model.safetensors", checkpoint_set, tmp_path / "a")
    argv[argv.index("--vocab") + 1] = str(vocab)
    fails_with_one_line(capsys, argv, "export", vocab, "not UTF-8")


BAD_YAML = {
    "empty": ("", "empty file"),
    "malformed": ("frames: [256, 384\nbatch: [1, 2]\n", "not valid YAML"),
    "a list": ("- 256\n- 384\n", "expected a mapping"),
}


@pytest.mark.parametrize("kind", list(BAD_YAML))
def test_bad_bucket_table(tmp_path, capsys, kind):
    text, words = BAD_YAML[kind]
    path = tmp_path / "buckets.yaml"
    path.write_text(text)
    fails_with_one_line(
        capsys, ["export", "--artifacts-root", str(tmp_path), "--buckets", str(path)], "export", path, words
    )
    assert not (tmp_path / "tiny").exists()


def test_bucket_table_with_a_wrong_value(tmp_path, capsys):
    path = tmp_path / "buckets.yaml"
    path.write_text("frames: [256, -1]\nbatch: [1]\n")
    fails_with_one_line(capsys, ["export", "--artifacts-root", str(tmp_path), "--buckets", str(path)], "export", path)


@pytest.mark.parametrize("kind", list(BAD_YAML))
def test_bad_recipe(reference, tmp_path, capsys, kind):
    text, words = BAD_YAML[kind]
    path = tmp_path / "precision.yaml"
    path.write_text(text.replace("frames", "graphs"))
    root = shutil.copytree(reference, tmp_path / "tiny")
    argv = ["quantize", "--artifacts-root", str(root.parent), "--quant-recipe", str(path)]
    fails_with_one_line(capsys, argv, "quantize", path, words)


@pytest.mark.parametrize("kind", list(BAD_YAML))
def test_bad_gates(reference, tmp_path, capsys, kind):
    text, words = BAD_YAML[kind]
    path = tmp_path / "gates.yaml"
    path.write_text(text.replace("frames", "graphs"))
    root = shutil.copytree(reference, tmp_path / "tiny")
    argv = ["validate", "--artifacts-root", str(root.parent), "--val-gates", str(path), "--val-reports", str(tmp_path)]
    fails_with_one_line(capsys, argv, "validate", path, words)
