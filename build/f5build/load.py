"""Model sources: one loader for the embedded tiny model, the real architecture with seeded weights,
and real checkpoints. Everything later in the build consumes a `ModelBundle`.

Generated weights are made from a fixed seed at build time (nothing downloaded, no binary committed).
A freshly initialised F5 DiT outputs exactly zero (its AdaLN and output projections start at zero), so
the generated weights are perturbed: the tiny model everywhere (every layer must influence the output
for the parity tests to mean anything), the full-size one only where f5-tts initialises to zero.
"""

from __future__ import annotations

import hashlib
import types
from dataclasses import dataclass, field
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

# Mel front-end every supported model shares (f5-tts "vocos" mel, Vocos mel-24khz).
AUDIO = {"sample_rate": 24000, "hop_length": 256, "n_fft": 1024, "win_length": 1024, "n_mels": 100, "mel_type": "vocos"}

TINY_ARCH = dict(dim=128, depth=2, heads=2, dim_head=64, ff_mult=2, text_dim=64, conv_layers=1, text_mask_padding=True)
TINY_VOCOS = dict(dim=64, intermediate_dim=192, num_layers=2)
VOCOS_24K = dict(dim=512, intermediate_dim=1536, num_layers=8)  # charactr/vocos-mel-24khz


@dataclass
class ModelBundle:
    """A DiT + Vocos pair in eval mode, with what the manifest must say about where it came from."""

    name: str
    dit: nn.Module
    vocos: nn.Module
    vocab: list[str]
    arch: dict[str, Any]
    vocos_arch: dict[str, Any]
    source: dict[str, Any] = field(default_factory=dict)

    @property
    def text_dim(self) -> int:
        return int(self.arch.get("text_dim") or 100)

    def model_config(self) -> dict[str, Any]:
        return {**self.arch, "mel_dim": AUDIO["n_mels"], "vocab_size": len(self.vocab), "vocoder": self.vocos_arch}


def f5_modules() -> types.SimpleNamespace:
    """f5-tts' network classes, imported on first use (importing f5_tts.model also loads its trainer)."""
    from f5_tts.model.backbones.dit import DiT
    from f5_tts.model.cfm import CFM

    return types.SimpleNamespace(DiT=DiT, CFM=CFM)


def f5_reference_sampler(bundle: ModelBundle, vocab_path: Path) -> nn.Module:
    """f5-tts' own CFM sampler around the bundle's DiT: the PyTorch reference that the runtime is
    compared with (tests) and timed against (bench), configured as f5-tts' load_model does."""
    from f5_tts.model.utils import get_tokenizer

    vocab_map, _ = get_tokenizer(str(vocab_path), "custom")
    mel = {"n_fft": AUDIO["n_fft"], "hop_length": AUDIO["hop_length"], "win_length": AUDIO["win_length"]}
    mel |= {"n_mel_channels": AUDIO["n_mels"], "target_sample_rate": AUDIO["sample_rate"], "mel_spec_type": "vocos"}
    cfm = f5_modules().CFM(
        transformer=bundle.dit, mel_spec_kwargs=mel, odeint_kwargs={"method": "euler"}, vocab_char_map=vocab_map
    )
    return cfm.eval()


def default_vocab_path() -> Path:
    """The Emilia zh/en pinyin vocab that ships inside the f5-tts package (F5TTS_v1_Base uses it)."""
    spec = find_spec("f5_tts")
    assert spec is not None and spec.submodule_search_locations
    return Path(next(iter(spec.submodule_search_locations))) / "infer" / "examples" / "vocab.txt"


def read_vocab(path: Path) -> list[str]:
    """Token per line, as f5-tts' custom tokenizer reads it (each line minus its final newline)."""
    with open(path, encoding="utf-8") as f:
        vocab = [line[:-1] for line in f]
    if not vocab or vocab[0] != " ":
        raise ValueError(f"{path}: not an f5-tts vocab (line 0 must be the space token, id 0 = unknown)")
    return vocab


def make_vocos(dim: int, intermediate_dim: int, num_layers: int) -> nn.Module:
    from vocos import Vocos
    from vocos.feature_extractors import MelSpectrogramFeatures
    from vocos.heads import ISTFTHead
    from vocos.models import VocosBackbone

    return Vocos(
        feature_extractor=MelSpectrogramFeatures(
            sample_rate=AUDIO["sample_rate"],
            n_fft=AUDIO["n_fft"],
            hop_length=AUDIO["hop_length"],
            n_mels=AUDIO["n_mels"],
            padding="center",
        ),
        backbone=VocosBackbone(
            input_channels=AUDIO["n_mels"], dim=dim, intermediate_dim=intermediate_dim, num_layers=num_layers
        ),
        head=ISTFTHead(dim=dim, n_fft=AUDIO["n_fft"], hop_length=AUDIO["hop_length"], padding="same"),
    )


def state_sha256(module: nn.Module) -> str:
    """Content hash of a module's weights (names, shapes, values), independent of file format."""
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


@torch.no_grad()
def _perturb(module: nn.Module, gen: torch.Generator, scale: float, only_zero: bool) -> None:
    for p in module.parameters():
        if only_zero and bool(p.abs().max() > 0):
            continue
        p.add_(torch.randn(p.shape, generator=gen) * scale)


def _generated(name: str, arch: dict[str, Any], vocos_arch: dict[str, Any], seed: int, tiny: bool) -> ModelBundle:
    vocab = read_vocab(default_vocab_path())
    torch.manual_seed(seed)
    dit = f5_modules().DiT(**arch, text_num_embeds=len(vocab), mel_dim=AUDIO["n_mels"])
    vocos = make_vocos(**vocos_arch)
    gen = torch.Generator().manual_seed(seed + 1)
    _perturb(dit, gen, 0.05 if tiny else 0.02, only_zero=not tiny)
    _perturb(vocos, gen, 0.02, only_zero=not tiny)
    bundle = ModelBundle(name, dit.eval(), vocos.eval(), vocab, dict(arch), dict(vocos_arch))
    bundle.source = {"kind": name, "seed": seed, "dit_sha256": state_sha256(dit), "vocos_sha256": state_sha256(vocos)}
    return bundle


def _arch_from_config(model_config: str) -> dict[str, Any]:
    path = Path(model_config)
    if not path.suffix:
        spec = find_spec("f5_tts")
        assert spec is not None and spec.submodule_search_locations
        path = Path(next(iter(spec.submodule_search_locations))) / "configs" / f"{model_config}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"model config {model_config!r} not found (an f5-tts config name or a YAML path)")
    cfg = yaml.safe_load(path.read_text())
    arch = dict(cfg["model"]["arch"]) if "model" in cfg else dict(cfg)
    for key in ("attn_backend", "checkpoint_activations"):
        arch.pop(key, None)
    return arch


def _load_state(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return {"ema_model_state_dict": load_file(str(path))}  # type: ignore[dict-item]
    return torch.load(path, map_location="cpu", weights_only=True)


def _load_strict(module: nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    missing, unexpected = module.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"{what}: checkpoint does not match the architecture; missing keys: {missing[:8]}"
            f"{' …' if len(missing) > 8 else ''}; unexpected keys: {unexpected[:8]}{' …' if len(unexpected) > 8 else ''}"
        )


def _checkpoint(ckpt: Path, vocab_path: Path | None, vocoder_dir: Path | None, model_config: str) -> ModelBundle:
    """An f5-tts checkpoint read the way f5-tts' load_checkpoint reads it (EMA weights)."""
    if not ckpt.is_file():
        raise FileNotFoundError(f"checkpoint {ckpt} not found")
    if vocoder_dir is None:
        raise ValueError("a real checkpoint needs --vocoder DIR (Vocos config.yaml + pytorch_model.bin)")
    vocab_path = vocab_path or default_vocab_path()
    vocab = read_vocab(vocab_path)
    arch = _arch_from_config(model_config)
    raw = _load_state(ckpt)
    state = raw.get("ema_model_state_dict") or raw.get("model_state_dict") or raw
    prefix = "ema_model.transformer." if any(k.startswith("ema_model.") for k in state) else "transformer."
    dit_state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    if not dit_state:
        raise ValueError(f"{ckpt}: no '{prefix}*' weights found (keys start with {sorted(state)[:3]})")
    dit = f5_modules().DiT(**arch, text_num_embeds=len(vocab), mel_dim=AUDIO["n_mels"])
    _load_strict(dit, {k: v.float() for k, v in dit_state.items()}, f"DiT from {ckpt}")

    cfg_path, bin_path = vocoder_dir / "config.yaml", vocoder_dir / "pytorch_model.bin"
    for p in (cfg_path, bin_path):
        if not p.is_file():
            raise FileNotFoundError(f"Vocos directory {vocoder_dir}: {p.name} missing")
    vcfg = yaml.safe_load(cfg_path.read_text())
    bb = vcfg["backbone"]["init_args"]
    vocos_arch = {"dim": bb["dim"], "intermediate_dim": bb["intermediate_dim"], "num_layers": bb["num_layers"]}
    vocos = make_vocos(**vocos_arch)
    vstate = torch.load(bin_path, map_location="cpu", weights_only=True)
    vstate = {k: v for k, v in vstate.items() if not k.startswith("feature_extractor.")}
    vstate.update({k: v for k, v in vocos.state_dict().items() if k.startswith("feature_extractor.")})
    _load_strict(vocos, vstate, f"Vocos from {vocoder_dir}")
    bundle = ModelBundle(ckpt.stem, dit.eval(), vocos.eval(), vocab, arch, vocos_arch)
    bundle.source = {
        "kind": "checkpoint",
        "checkpoint": str(ckpt),
        "dit_sha256": state_sha256(dit),
        "vocos_sha256": state_sha256(vocos),
        "vocab": str(vocab_path),
    }
    return bundle


def load_model(
    model: str = "tiny",
    *,
    seed: int = 0,
    vocab: Path | None = None,
    vocoder: Path | None = None,
    model_config: str = "F5TTS_v1_Base",
) -> ModelBundle:
    """`tiny` | `f5tts-v1-base` | a checkpoint path -> ModelBundle (DiT + Vocos, eval mode, FP32, CPU)."""
    if model == "tiny":
        return _generated("tiny", TINY_ARCH, TINY_VOCOS, seed, tiny=True)
    if model == "f5tts-v1-base":
        return _generated("f5tts-v1-base", _arch_from_config("F5TTS_v1_Base"), VOCOS_24K, seed, tiny=False)
    return _checkpoint(Path(model), vocab, vocoder, model_config)
