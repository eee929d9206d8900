"""Model sources: one loader for the embedded tiny model, the real architecture with seeded weights,
and real checkpoints. Everything later in the build consumes a `ModelBundle`.

Generated weights are made from a fixed seed at build time (nothing downloaded, no binary committed).
A freshly initialised F5 DiT outputs exactly zero (its AdaLN and output projections start at zero), so
the generated weights are perturbed: the tiny model everywhere (every layer must influence the output
for the parity tests to mean anything), the full-size one only where f5-tts initialises to zero.

Real checkpoints are read exactly as f5-tts' load_model / load_vocoder read them (EMA weights unless
told otherwise, strict keys, the vocab file deciding the text embedding size, the Vocos built from its
config.yaml), and everything they would refuse is refused here with the key or hparam named: a model
that loads differently from f5-tts would export graphs that are not the user's model.
"""

from __future__ import annotations

import hashlib
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import torch
from torch import nn

from f5build.inputs import BuildInputError, read_text, read_yaml, safetensors_load, torch_load
from f5build.vocos_config import read_vocos_config
from f5rt.files import sha256_file

# Mel front-end every supported model shares (f5-tts "vocos" mel, Vocos mel-24khz).
AUDIO = {"sample_rate": 24000, "hop_length": 256, "n_fft": 1024, "win_length": 1024, "n_mels": 100, "mel_type": "vocos"}

TINY_ARCH = dict(dim=128, depth=2, heads=2, dim_head=64, ff_mult=2, text_dim=64, conv_layers=1, text_mask_padding=True)
# Vocos backbones; head padding "center" as in the released charactr/vocos-mel-24khz config.yaml, so
# the seeded models decode F frames to (F-1)*hop samples like the real vocoder.
# Three ConvNeXt blocks: the INT8 recipe keeps the first two blocks' input linears in FP16
# (config/precision.yaml), so the tiny vocoder's INT8 variant still has one to quantize.
TINY_VOCOS = dict(dim=64, intermediate_dim=192, num_layers=3, padding="center")
VOCOS_24K = dict(dim=512, intermediate_dim=1536, num_layers=8, padding="center")  # charactr/vocos-mel-24khz
WEIGHTS = ("ema", "online")

# The trained embedded model: committed in f5-tts' released layout (f5build.train.release) and read
# through the same real-checkpoint path as a user's checkpoint, its files checked against the
# sha256 its checkpoint.json records.
EMBEDDED = "f5tts-small-en"
EMBEDDED_DIR = Path(__file__).resolve().parents[2] / "models" / EMBEDDED
GENERATED = ("tiny", "f5tts-v1-base")
NAMED = (*GENERATED, EMBEDDED)


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
    read_text(path, "vocab")  # missing, a folder or not UTF-8: one line naming the file
    with open(path, encoding="utf-8") as f:
        vocab = [line[:-1] for line in f]
    if not vocab or vocab[0] != " ":
        raise ValueError(f"{path}: not an f5-tts vocab (line 0 must be the space token, id 0 = unknown)")
    return vocab


def make_vocos(
    dim: int,
    intermediate_dim: int,
    num_layers: int,
    padding: str,
    feature_padding: str = "center",
    layer_scale_init_value: float | None = None,
) -> nn.Module:
    """The Vocos that `Vocos.from_hparams` builds from a mel config (see vocos_config); `padding` is
    the ISTFT head's ("center": (F-1)*hop samples, "same": F*hop)."""
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
            padding=feature_padding,
        ),
        backbone=VocosBackbone(
            input_channels=AUDIO["n_mels"],
            dim=dim,
            intermediate_dim=intermediate_dim,
            num_layers=num_layers,
            layer_scale_init_value=layer_scale_init_value,
        ),
        head=ISTFTHead(dim=dim, n_fft=AUDIO["n_fft"], hop_length=AUDIO["hop_length"], padding=padding),
    )


def state_sha256(module: nn.Module) -> str:
    """Content hash of a module's weights (names, shapes, values), independent of file format."""
    return tensors_sha256(module.state_dict())


def tensors_sha256(state: Mapping[str, torch.Tensor]) -> str:
    """Content hash of a state dict (names, shapes, values): the same weights hash the same, whichever
    module, file or training state they were read from."""
    h = hashlib.sha256()
    for name, tensor in sorted(state.items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        # flattened first: a 0-dim buffer (an EMA's step count) cannot be viewed as bytes; same bytes otherwise
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
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
    cfg = read_yaml(path, "model config")
    try:
        arch = dict(cfg["model"]["arch"]) if "model" in cfg else dict(cfg)
    except (KeyError, TypeError, ValueError):
        raise BuildInputError(path, "expected model.arch (an f5-tts model config)") from None
    for key in ("attn_backend", "checkpoint_activations"):
        arch.pop(key, None)
    return arch


# What f5-tts' load_checkpoint drops before its strict load_state_dict: the EMA wrapper's
# bookkeeping, and mel buffers that checkpoints from before f5-tts 305e3ea still carry.
EMA_BOOKKEEPING = ("initted", "step")
LEGACY_MEL_KEYS = ("mel_spec.mel_stft.mel_scale.fb", "mel_spec.mel_stft.spectrogram.window")
_EMA, _DIT = "ema_model.", "transformer."


def _weight_sets(ckpt: Path) -> dict[str, dict[str, torch.Tensor]]:
    """The checkpoint's EMA and online state dicts, keyed as CFM's (EMA prefix removed).

    .pt (f5-tts' trainer): `ema_model_state_dict` (`ema_model.transformer.*` + initted/step) and
    `model_state_dict` (`transformer.*`). .safetensors (the released form): one flat dict, the EMA
    weights under `ema_model.`, online ones (if any) bare. Keys are kept as written, minus the prefix.
    """
    if ckpt.suffix == ".safetensors":
        flat = safetensors_load(ckpt, "f5-tts checkpoint")
        ema = {k[len(_EMA) :]: v for k, v in flat.items() if k.startswith(_EMA)}
        online = {k: v for k, v in flat.items() if not k.startswith(_EMA)}
        return {"ema": ema, "online": online}
    raw = torch_load(ckpt, "f5-tts checkpoint")
    if not isinstance(raw, dict) or not ({"ema_model_state_dict", "model_state_dict"} & set(raw)):
        top = sorted(raw)[:6] if isinstance(raw, dict) else type(raw).__name__
        raise ValueError(
            f"{ckpt}: not an f5-tts checkpoint (no 'ema_model_state_dict' or 'model_state_dict'; top level: {top})"
        )
    ema = {k.removeprefix(_EMA): v for k, v in (raw.get("ema_model_state_dict") or {}).items()}
    return {"ema": ema, "online": dict(raw.get("model_state_dict") or {})}


def _dit_state(ckpt: Path, weights: str) -> tuple[dict[str, torch.Tensor], str]:
    """The DiT's weights from `ckpt` as f5-tts' load_checkpoint selects them (use_ema = weights == "ema").

    Returns them keyed by DiT names, and the prefix they carry in the file (for error messages).
    Refuses keys f5-tts' strict load would reject: anything that is not `transformer.*` besides the
    bookkeeping and legacy keys f5-tts drops itself.
    """
    if weights not in WEIGHTS:
        raise ValueError(f"--weights must be one of {', '.join(WEIGHTS)}, got {weights!r}")
    sets = _weight_sets(ckpt)
    drop = set(EMA_BOOKKEEPING) | set(LEGACY_MEL_KEYS)
    prefix = {"ema": _EMA, "online": ""}
    # A .safetensors is one flat dict that f5-tts loads whole; of a .pt it reads the chosen dict only.
    checked = WEIGHTS if ckpt.suffix == ".safetensors" else (weights,)
    unexpected = [prefix[w] + k for w in checked for k in sets[w] if k not in drop and not k.startswith(_DIT)]
    if unexpected:
        raise ValueError(
            f"{ckpt}: unexpected keys {_names(unexpected)}; f5-tts' load_checkpoint refuses them too "
            f"(an F5-TTS checkpoint holds {_DIT}* weights only)"
        )
    chosen = {k[len(_DIT) :]: v for k, v in sets[weights].items() if k.startswith(_DIT)}
    if not chosen and weights == "ema":
        has_online = any(k.startswith(_DIT) for k in sets["online"])
        if ckpt.suffix == ".safetensors":
            why = f"no EMA weights ({_EMA}* keys); f5-tts (use_ema=True) would take its bare weights for EMA ones"
        else:
            why = "no EMA weights (no ema_model_state_dict); f5-tts (use_ema=True) refuses this checkpoint"
        fix = "pass --weights online to export its online (non-EMA) weights" if has_online else "it has no weights"
        raise ValueError(f"{ckpt}: {why}; {fix}")
    if not chosen:
        raise ValueError(f"{ckpt}: no online (non-EMA) weights in it; drop --weights online to export its EMA weights")
    return {k: v.float() if v.is_floating_point() else v for k, v in chosen.items()}, prefix[weights] + _DIT


def _names(keys: list[str], limit: int = 8) -> str:
    shown = ", ".join(repr(k) for k in keys[:limit])
    return f"[{shown}{f', … ({len(keys)} in all)' if len(keys) > limit else ''}]"


def _load_strict(
    module: nn.Module, state: dict[str, torch.Tensor], what: str, prefix: str = "", hint: str = ""
) -> None:
    """load_state_dict(strict=True) with every problem named in one ValueError instead of a traceback.

    torch raises a RuntimeError for a shape mismatch even with strict=False, so shapes are compared
    first; keys are named as they are written in the file (`prefix` + module key).
    """
    have = module.state_dict()
    missing = [prefix + k for k in have if k not in state]
    unexpected = [prefix + k for k in state if k not in have]
    shapes = [
        f"{prefix}{k}: checkpoint {tuple(v.shape)}, model {tuple(have[k].shape)}"
        for k, v in state.items()
        if k in have and tuple(v.shape) != tuple(have[k].shape)
    ]
    problems = []
    if missing:
        problems.append(f"missing keys: {_names(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_names(unexpected)}")
    if shapes:
        problems.append(f"shape mismatch: {'; '.join(shapes[:8])}{' …' if len(shapes) > 8 else ''}")
    if problems:
        raise ValueError(f"{what} does not match the architecture: {'; '.join(problems)}{hint}")
    module.load_state_dict(state, strict=True)


def _vocab_hint(state: dict[str, torch.Tensor], dit: nn.Module, vocab: list[str], vocab_path: Path) -> str:
    """Why text_embed's row count can differ: the vocab file decides it (f5-tts: len(vocab) + 1 filler)."""
    key = "text_embed.text_embed.weight"
    got, want = state.get(key), dit.state_dict()[key]
    if got is None or got.shape[0] == want.shape[0]:
        return ""
    return (
        f". The vocab file {vocab_path} has {len(vocab)} tokens, so the model gets {len(vocab) + 1} text embedding "
        f"rows (tokens + filler); the checkpoint has {got.shape[0]}: pass the checkpoint's own vocab.txt with --vocab"
    )


def _vocos(vocoder_dir: Path) -> tuple[nn.Module, dict[str, Any]]:
    """A Vocos folder loaded as f5-tts' load_vocoder does: from_hparams(config.yaml), then a strict
    load_state_dict of pytorch_model.bin (its feature_extractor.mel_spec.* buffers included)."""
    cfg_path, bin_path = vocoder_dir / "config.yaml", vocoder_dir / "pytorch_model.bin"
    for p in (cfg_path, bin_path):
        if not p.is_file():
            raise FileNotFoundError(f"Vocos directory {vocoder_dir}: {p.name} missing")
    vocos_arch = read_vocos_config(cfg_path, AUDIO)
    vocos = make_vocos(**vocos_arch)
    vstate = torch_load(bin_path, "Vocos weights")
    if not isinstance(vstate, dict):
        raise ValueError(f"{bin_path}: not a state dict ({type(vstate).__name__})")
    _load_strict(vocos, vstate, f"Vocos {bin_path}", hint=f" (check {cfg_path.name} against the weights)")
    return vocos.eval(), vocos_arch


def _checkpoint(
    ckpt: Path, vocab_path: Path | None, vocoder_dir: Path | None, model_config: str, weights: str
) -> ModelBundle:
    """An f5-tts checkpoint read the way f5-tts' load_model / load_checkpoint read it."""
    if not ckpt.is_file():
        raise FileNotFoundError(f"checkpoint {ckpt} not found")
    if vocoder_dir is None:
        raise ValueError("a real checkpoint needs --vocoder DIR (Vocos config.yaml + pytorch_model.bin)")
    vocab_path = vocab_path or default_vocab_path()
    vocab = read_vocab(vocab_path)
    arch = _arch_from_config(model_config)
    vocos, vocos_arch = _vocos(vocoder_dir)  # its config is checked before the (large) checkpoint is read
    state, prefix = _dit_state(ckpt, weights)
    dit = f5_modules().DiT(**arch, text_num_embeds=len(vocab), mel_dim=AUDIO["n_mels"])
    hint = _vocab_hint(state, dit, vocab, vocab_path) or f" (is --model-config {model_config} its architecture?)"
    _load_strict(dit, state, f"{ckpt} ({weights} weights)", prefix=prefix, hint=hint)
    bundle = ModelBundle(ckpt.stem, dit.eval(), vocos, vocab, arch, vocos_arch)
    bundle.source = {
        "kind": "checkpoint",
        "checkpoint": str(ckpt),
        "checkpoint_sha256": sha256_file(ckpt),  # the file itself: which download / training run
        "weights": weights,
        "dit_sha256": state_sha256(dit),
        "vocos_sha256": state_sha256(vocos),
        "vocab": str(vocab_path),
    }
    return bundle


@dataclass(frozen=True)
class ReleasedCheckpoint:
    """The paths of a checkpoint folder in f5-tts' released layout (see f5build.train.release)."""

    folder: Path
    checkpoint: Path
    vocab: Path
    vocoder: Path
    model_config: Path

    @classmethod
    def open(cls, folder: Path, verify: bool = True) -> ReleasedCheckpoint:
        """Locate the files; with `verify`, each must match the sha256 in checkpoint.json."""
        import json

        meta_path = folder / "checkpoint.json"
        if not meta_path.is_file():
            raise FileNotFoundError(
                f"{folder}: no checkpoint.json; the embedded model is made by `nox -s train` (or restore the folder)"
            )
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            files = dict(meta["files"])
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{meta_path}: not a checkpoint record ({e})") from None
        if verify:
            for rel, digest in sorted(files.items()):
                path = folder / rel
                if not path.is_file():
                    raise FileNotFoundError(f"{path}: missing (listed in {meta_path.name})")
                if _sha256(path) != digest:
                    raise ValueError(
                        f"{path}: sha256 differs from {meta_path.name}; the checkpoint was changed or damaged"
                    )
        ckpts = sorted(r for r in files if r.startswith("model_") and r.endswith(".safetensors"))
        configs = sorted(r for r in files if r.endswith(".yaml") and "/" not in r)
        if len(ckpts) != 1 or len(configs) != 1:
            raise ValueError(
                f"{meta_path}: expected one model_*.safetensors and one arch .yaml, found {ckpts} {configs}"
            )
        return cls(folder, folder / ckpts[0], folder / "vocab.txt", folder / "vocos", folder / configs[0])


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def load_model(
    model: str = "tiny",
    *,
    seed: int = 0,
    vocab: Path | None = None,
    vocoder: Path | None = None,
    model_config: str = "F5TTS_v1_Base",
    weights: str = "ema",
) -> ModelBundle:
    """`tiny` | `f5tts-v1-base` | `f5tts-small-en` | a checkpoint path -> ModelBundle (eval, FP32, CPU).

    `f5tts-small-en` is the trained embedded model (models/f5tts-small-en), loaded exactly as a
    checkpoint path with its own --vocab, --vocoder and --model-config would be.

    `weights` picks a checkpoint's EMA weights (f5-tts' inference default, use_ema=True) or its
    online ones; the generated models have one set only.
    """
    if model == "tiny":
        return _generated("tiny", TINY_ARCH, TINY_VOCOS, seed, tiny=True)
    if model == "f5tts-v1-base":
        return _generated("f5tts-v1-base", _arch_from_config("F5TTS_v1_Base"), VOCOS_24K, seed, tiny=False)
    if model == EMBEDDED:
        rel = ReleasedCheckpoint.open(EMBEDDED_DIR)
        bundle = _checkpoint(rel.checkpoint, rel.vocab, rel.vocoder, str(rel.model_config), weights)
        bundle.name = EMBEDDED
        return bundle
    return _checkpoint(Path(model), vocab, vocoder, model_config, weights)
