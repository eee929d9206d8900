"""A Vocos `config.yaml` read the way `Vocos.from_hparams` reads it, and refused where the export
would not reproduce it.

Vocos builds its three parts from the `feature_extractor`, `backbone` and `head` sections, each a
`class_path` and `init_args`, with the class defaults for what `init_args` leaves out (so a head
without `padding` is "same", a feature extractor without one is "center"). The released
charactr/vocos-mel-24khz config is::

    feature_extractor:
      class_path: vocos.feature_extractors.MelSpectrogramFeatures
      init_args: {sample_rate: 24000, n_fft: 1024, hop_length: 256, n_mels: 100, padding: center}
    backbone:
      class_path: vocos.models.VocosBackbone
      init_args: {input_channels: 100, dim: 512, intermediate_dim: 1536, num_layers: 8}
    head:
      class_path: vocos.heads.ISTFTHead
      init_args: {dim: 512, n_fft: 1024, hop_length: 256, padding: center}

The export implements exactly this family: mel features equal to f5-tts' mel, the unconditional
ConvNeXt backbone and the ISTFT head with either padding. Anything else (EnCodec features, the
AdaLayerNorm backbone, an MDCT head, another mel) would export a graph that is not this vocoder, so
it is refused here, naming the section and hparam, before any weight is read. Other top-level
sections are ignored, as Vocos ignores them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from f5build.inputs import BuildInputError, read_yaml

FEATURES = "vocos.feature_extractors.MelSpectrogramFeatures"
BACKBONE = "vocos.models.VocosBackbone"
HEAD = "vocos.heads.ISTFTHead"
PADDINGS = ("center", "same")

# Each implemented class: its init_args with Vocos' defaults (None = required).
_SIGNATURES: dict[str, dict[str, Any]] = {
    FEATURES: {"sample_rate": 24000, "n_fft": 1024, "hop_length": 256, "n_mels": 100, "padding": "center"},
    BACKBONE: {
        "input_channels": None,
        "dim": None,
        "intermediate_dim": None,
        "num_layers": None,
        "layer_scale_init_value": None,
        "adanorm_num_embeddings": None,
    },
    HEAD: {"dim": None, "n_fft": None, "hop_length": None, "padding": "same"},
}
_REQUIRED = {
    BACKBONE: ("input_channels", "dim", "intermediate_dim", "num_layers"),
    HEAD: ("dim", "n_fft", "hop_length"),
}


def _section(cfg: dict[str, Any], name: str, class_path: str, where: str) -> dict[str, Any]:
    """`init_args` of one section merged over the class defaults; refuses another class or unknown args."""
    sec = cfg.get(name)
    if not isinstance(sec, dict) or "class_path" not in sec:
        raise ValueError(f"{where}: no '{name}' section with a class_path (a Vocos config.yaml has one)")
    if sec["class_path"] != class_path:
        raise ValueError(
            f"{where}: {name}.class_path {sec['class_path']!r} is not supported by the export "
            f"(it implements {class_path} only)"
        )
    args = sec.get("init_args") or {}
    if not isinstance(args, dict):
        raise ValueError(f"{where}: {name}.init_args must be a mapping, got {type(args).__name__}")
    sig = _SIGNATURES[class_path]
    unknown = sorted(set(args) - set(sig))
    if unknown:
        raise ValueError(f"{where}: {name}.init_args {unknown} are not arguments of {class_path}")
    missing = [k for k in _REQUIRED.get(class_path, ()) if k not in args]
    if missing:
        raise ValueError(f"{where}: {name}.init_args lacks {missing} (required by {class_path})")
    return {**sig, **args}


def _int(args: dict[str, Any], key: str, section: str, where: str) -> int:
    v = args[key]
    if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
        raise ValueError(f"{where}: {section}.init_args.{key} must be a positive integer, got {v!r}")
    return v


def read_vocos_config(path: Path, audio: dict[str, Any]) -> dict[str, Any]:
    """config.yaml -> make_vocos() keyword arguments, after checking it against the mel `audio` config.

    Returns dim, intermediate_dim, num_layers, padding (the head's ISTFT padding), and
    feature_padding / layer_scale_init_value when they differ from the defaults, so the Vocos is
    built with every argument `from_hparams` would pass it.
    """
    where = str(path)
    try:
        cfg: Any = read_yaml(path, "Vocos config")
    except BuildInputError as e:
        if "expected a mapping" not in e.problem:
            raise
        cfg = None
    if not isinstance(cfg, dict):
        raise ValueError(f"{where}: not a Vocos config (expected feature_extractor, backbone and head sections)")
    fe = _section(cfg, "feature_extractor", FEATURES, where)
    bb = _section(cfg, "backbone", BACKBONE, where)
    hd = _section(cfg, "head", HEAD, where)

    for key in ("sample_rate", "n_fft", "hop_length", "n_mels"):
        if _int(fe, key, "feature_extractor", where) != audio[key]:
            raise ValueError(
                f"{where}: feature_extractor.init_args.{key} = {fe[key]} differs from f5-tts' mel ({key} "
                f"{audio[key]}); the export only supports a Vocos trained on that mel"
            )
    for key in ("n_fft", "hop_length"):
        if _int(hd, key, "head", where) != audio[key]:
            raise ValueError(
                f"{where}: head.init_args.{key} = {hd[key]} differs from the mel's {key} {audio[key]}; not supported"
            )
    if _int(bb, "input_channels", "backbone", where) != audio["n_mels"]:
        raise ValueError(
            f"{where}: backbone.init_args.input_channels = {bb['input_channels']} differs from the mel's "
            f"{audio['n_mels']} channels"
        )
    if bb["adanorm_num_embeddings"] is not None:
        raise ValueError(
            f"{where}: backbone.init_args.adanorm_num_embeddings = {bb['adanorm_num_embeddings']!r} (an "
            "AdaLayerNorm backbone, conditioned on a bandwidth id) is not implemented by the export; "
            "only the unconditional mel Vocos is"
        )
    dim = _int(bb, "dim", "backbone", where)
    if _int(hd, "dim", "head", where) != dim:
        raise ValueError(f"{where}: head.init_args.dim = {hd['dim']} differs from backbone.init_args.dim = {dim}")
    for section, args in (("feature_extractor", fe), ("head", hd)):
        if args["padding"] not in PADDINGS:
            raise ValueError(
                f"{where}: {section}.init_args.padding = {args['padding']!r} is not supported "
                f"(Vocos takes {' or '.join(PADDINGS)})"
            )
    lsiv = bb["layer_scale_init_value"]
    if lsiv is not None and (isinstance(lsiv, bool) or not isinstance(lsiv, (int, float))):
        raise ValueError(f"{where}: backbone.init_args.layer_scale_init_value must be a number, got {lsiv!r}")

    arch: dict[str, Any] = {
        "dim": dim,
        "intermediate_dim": _int(bb, "intermediate_dim", "backbone", where),
        "num_layers": _int(bb, "num_layers", "backbone", where),
        "padding": hd["padding"],
    }
    if fe["padding"] != "center":
        arch["feature_padding"] = fe["padding"]
    if lsiv is not None:
        arch["layer_scale_init_value"] = float(lsiv)
    return arch
