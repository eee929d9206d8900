"""The calibration corpus: text lines, reference-voice recipes, and the script that makes the voices.

Everything that decides what the INT8 scales are computed from is committed here: the text files
under texts/, the voice recipes and transcripts in manifest.json, and this script. The voice audio
(voices/<id>/ref.wav + ref.txt) is generated, gitignored, and made again on any machine by

    python calibration/corpus.py voices            # espeak-ng when installed, else the synthetic generator
    python calibration/corpus.py check             # manifest hashes match texts/ (CI runs this via the tests)
    python calibration/corpus.py update            # rewrite the text hashes after editing texts/

Two generators, both deterministic for a given version:

* espeak-ng (Debian: `apt-get install -y espeak-ng`): formant synthesis of the real transcript in
  Mandarin or English, at the recipe's voice variant, pitch and rate. Real phonetic content, so the
  calibration sees speech-like reference mels.
* synthetic (fallback, numpy + scipy only): a source-filter vowel/consonant generator. One syllable
  per CJK character / vowel group, harmonic glottal source at the recipe's f0 with a tone contour and
  declination, three formant resonators per syllable, noise bursts for consonants, pauses at
  punctuation. It is not speech, but it has speech's spectral envelope, pitch range and rhythm, which
  is what calibration ranges depend on; it keeps CI free of apt.

Users can add their own recordings as voices/<id>/ref.wav (any rate) + ref.txt; ids not in the
manifest are left alone and used for calibration too.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent
MANIFEST = "manifest.json"
LOCK = "voices.lock.json"
GENERATORS = ("auto", "espeak-ng", "synthetic")
SYNTH_RATE = 24000
ESPEAK_HINT = "install it with `apt-get install -y espeak-ng` (Debian/Ubuntu) for speech-like reference voices"


@dataclass(frozen=True)
class Line:
    """One corpus line: where it comes from, its language tag, and whether validation holds it out."""

    file: str
    index: int
    lang: str
    text: str
    held_out: bool


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_manifest(root: Path = ROOT) -> dict[str, Any]:
    path = root / MANIFEST
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: calibration manifest missing") from None
    for key in ("texts", "voices", "held_out"):
        if key not in data:
            raise ValueError(f"{path}: lacks '{key}'")
    return data


def read_lines(root: Path = ROOT, manifest: dict[str, Any] | None = None) -> list[Line]:
    """Every non-empty corpus line; line i of a file is held out when i % every == every - 1."""
    manifest = manifest or read_manifest(root)
    every = int(manifest["held_out"]["every_nth_line"])
    out: list[Line] = []
    for entry in manifest["texts"]:
        raw = (root / entry["file"]).read_text(encoding="utf-8").splitlines()
        lines = [ln.strip() for ln in raw if ln.strip()]
        for i, text in enumerate(lines):
            out.append(Line(entry["file"], i, entry["lang"], text, i % every == every - 1))
    return out


def text_entry(root: Path, file: str, lang: str, style: str) -> dict[str, Any]:
    data = (root / file).read_bytes()
    lines = [ln for ln in data.decode("utf-8").splitlines() if ln.strip()]
    return {"file": file, "lang": lang, "style": style, "lines": len(lines), "sha256": _sha256(data)}


def check_manifest(root: Path = ROOT) -> list[str]:
    """Problems with the committed manifest: stale text hashes, bad voice recipes (empty = fine)."""
    manifest = read_manifest(root)
    problems = []
    for entry in manifest["texts"]:
        path = root / entry["file"]
        if not path.is_file():
            problems.append(f"{entry['file']}: missing")
            continue
        now = text_entry(root, entry["file"], entry["lang"], entry.get("style", ""))
        if now["sha256"] != entry["sha256"] or now["lines"] != entry["lines"]:
            problems.append(f"{entry['file']}: changed since the manifest was written (run `corpus.py update`)")
    ids = [v["id"] for v in manifest["voices"]]
    if len(set(ids)) != len(ids):
        problems.append("duplicate voice ids")
    for v in manifest["voices"]:
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", v["id"]):
            problems.append(f"voice id {v['id']!r} is not a plain name")
        if not v.get("text", "").strip():
            problems.append(f"voice {v['id']}: empty transcript")
    if manifest.get("corpus_sha256") != corpus_sha256(manifest):
        problems.append("corpus_sha256 is stale (run `corpus.py update`)")
    for vid in manifest["held_out"]["voices"]:
        if vid not in ids:
            problems.append(f"held-out voice {vid!r} has no recipe")
    return problems


def update_manifest(root: Path = ROOT) -> dict[str, Any]:
    manifest = read_manifest(root)
    manifest["texts"] = [text_entry(root, e["file"], e["lang"], e.get("style", "")) for e in manifest["texts"]]
    manifest["corpus_sha256"] = corpus_sha256(manifest)
    _write_atomic(root / MANIFEST, (json.dumps(manifest, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))
    return manifest


def corpus_sha256(manifest: dict[str, Any]) -> str:
    """Hash of what the corpus says (texts' hashes, recipes, split), independent of key order."""
    core = {k: manifest[k] for k in ("texts", "voices", "held_out")}
    return _sha256(json.dumps(core, sort_keys=True, ensure_ascii=True).encode("ascii"))


def recipe_sha256(recipe: dict[str, Any]) -> str:
    return _sha256(json.dumps(recipe, sort_keys=True, ensure_ascii=True).encode("ascii"))


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


# -- espeak-ng -----------------------------------------------------------------------------------


def espeak_version() -> str | None:
    """'espeak-ng 1.51' when the binary runs, else None."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"speak NG text-to-speech:\s*([\w.\-]+)", out, re.IGNORECASE)
    return f"espeak-ng {m.group(1) if m else out.strip()[:40]}"


def espeak_voice(recipe: dict[str, Any]) -> tuple[np.ndarray, int]:
    """Speak the recipe's transcript with espeak-ng; returns (float32 mono, sample rate)."""
    import soundfile as sf

    e = recipe["espeak"]
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "out.wav"
        cmd = ["espeak-ng", "-v", e["voice"], "-p", str(e["pitch"]), "-s", str(e["speed"]), "-w", str(wav)]
        subprocess.run([*cmd, recipe["text"]], check=True, capture_output=True, timeout=60)
        audio, sr = sf.read(wav, dtype="float32", always_2d=False)
    return _trim_and_level(np.asarray(audio, dtype=np.float32), int(sr)), int(sr)


def _trim_and_level(audio: np.ndarray, sr: int, rms: float = 0.08) -> np.ndarray:
    """Cut espeak's long trailing silence to 0.2 s, keep 0.1 s lead-in, set a speech-like RMS."""
    loud = np.flatnonzero(np.abs(audio) > 0.01)
    if len(loud):
        a, b = max(0, loud[0] - int(0.1 * sr)), min(len(audio), loud[-1] + int(0.2 * sr))
        audio = audio[a:b]
    level = float(np.sqrt(np.mean(audio.astype(np.float64) ** 2))) if len(audio) else 0.0
    return (audio * (rms / level)).astype(np.float32) if level > 0 else audio


# -- synthetic fallback --------------------------------------------------------------------------

# (F1, F2, F3) in Hz of a few vowels (adult male; scaled by the recipe's formant_scale).
_VOWELS = (
    (730, 1090, 2440),
    (270, 2290, 3010),
    (300, 870, 2240),
    (530, 1840, 2480),
    (570, 840, 2410),
    (440, 1020, 2240),
)
_PAUSE = {
    ",": 0.18,
    "，": 0.18,
    "、": 0.12,
    ".": 0.32,
    "。": 0.32,
    "!": 0.3,
    "！": 0.3,
    "?": 0.3,
    "？": 0.3,
    ";": 0.2,
    "；": 0.2,
    ":": 0.2,
    "：": 0.2,
}


def _units(text: str) -> list[tuple[str, str]]:
    """('syl', key) per syllable and ('pause', char) per punctuation mark, in reading order."""
    out: list[tuple[str, str]] = []
    for tok in re.findall(r"[A-Za-z]+|\d|[^\sA-Za-z\d]", text):
        if tok in _PAUSE:
            out.append(("pause", tok))
        elif tok.isascii() and tok.isalpha():
            groups = re.findall(r"[aeiouy]+", tok.lower()) or [tok]
            out.extend(("syl", f"{tok}{i}") for i in range(len(groups)))
        elif tok.isdigit() or unicodedata.category(tok).startswith("L"):
            out.append(("syl", tok))
    return out


def _resonate(x: np.ndarray, freq: float, bw: float, sr: int) -> np.ndarray:
    from scipy.signal import lfilter

    r = np.exp(-np.pi * bw / sr)
    theta = 2 * np.pi * freq / sr
    a = [1.0, -2 * r * np.cos(theta), r * r]
    return lfilter([1.0 - r], a, x)


def synthetic_voice(recipe: dict[str, Any], sr: int = SYNTH_RATE) -> np.ndarray:
    """Deterministic speech-shaped audio for the recipe's transcript (see the module docstring)."""
    s = recipe["synthetic"]
    f0, fscale, rate = float(s["f0_hz"]), float(s.get("formant_scale", 1.0)), float(s["syllables_per_s"])
    seed = int(_sha256(f"{recipe['id']}\0{recipe['text']}".encode())[:8], 16)
    rng = np.random.Generator(np.random.PCG64(seed))
    pieces = [np.zeros(int(0.12 * sr))]
    units = _units(recipe["text"]) or [("syl", "a")]
    n_syl = max(1, sum(1 for k, _ in units if k == "syl"))
    done = 0
    for kind, key in units:
        if kind == "pause":
            pieces.append(np.zeros(int(_PAUSE[key] * sr)))
            continue
        h = int(_sha256(key.encode("utf-8"))[:8], 16)
        dur = (1.0 / rate) * (0.8 + 0.4 * rng.random())
        n = int(dur * sr)
        t = np.arange(n) / sr
        # pitch: declination over the utterance, a tone shape per syllable, slight vibrato
        decl = 1.0 + 0.12 * (0.5 - done / n_syl)
        ramp = t / dur - 0.5
        tone = (0.0 * ramp, 0.16 * ramp, -0.16 * ramp, -0.1 * np.sin(np.pi * t / dur))[h % 4]
        pitch = f0 * decl * (1.0 + tone + 0.01 * np.sin(2 * np.pi * 5.5 * t))
        phase = 2 * np.pi * np.cumsum(pitch) / sr
        harmonics = int(min(40, 5000 // (f0 * 1.2)))
        source = sum(np.sin(k * phase) / k for k in range(1, harmonics + 1))
        vowel = _VOWELS[(h // 4) % len(_VOWELS)]
        voiced = sum(
            _resonate(source, f * fscale, 80 + 0.06 * f, sr) * g for f, g in zip(vowel, (1.0, 0.6, 0.3), strict=True)
        )
        env = np.minimum(1.0, np.minimum(t / 0.03, (dur - t) / 0.05)).clip(0, 1)
        cons = int(n * (0.15 + 0.1 * ((h >> 8) % 3) / 2))
        noise = _resonate(rng.standard_normal(cons), 2500 + 1500 * ((h >> 12) % 3), 1500, sr) * 0.6
        syl = voiced * env
        syl[:cons] = syl[:cons] * np.linspace(0.1, 1.0, cons) + noise * np.linspace(1.0, 0.0, cons)
        pieces.append(syl)
        done += 1
    pieces.append(np.zeros(int(0.2 * sr)))
    audio = np.concatenate(pieces)
    return _trim_and_level((audio / (np.max(np.abs(audio)) + 1e-9)).astype(np.float32), sr)


# -- making the voices folder --------------------------------------------------------------------


def _choose_generator(generator: str) -> tuple[str, str]:
    if generator not in GENERATORS:
        raise ValueError(f"unknown voice generator {generator!r} (choose from {', '.join(GENERATORS)})")
    version = espeak_version()
    if generator == "espeak-ng" and version is None:
        raise FileNotFoundError(f"espeak-ng not found: {ESPEAK_HINT}")
    if generator in ("auto", "espeak-ng") and version is not None:
        return "espeak-ng", version
    return "synthetic", "synthetic 1"


def ensure_voices(
    out_dir: Path,
    root: Path = ROOT,
    generator: str = "auto",
    force: bool = False,
    log: Any = print,
) -> dict[str, dict[str, Any]]:
    """Make voices/<id>/ref.wav + ref.txt for every recipe that lacks them (or whose recipe changed).

    Returns {voice id: {"generator", "recipe_sha256", "sha256"}} for the recipe voices, as also kept in
    voices/voices.lock.json; a voice made by another generator is kept unless `force` (so a machine
    without espeak-ng does not overwrite espeak voices, and vice versa).
    """
    import soundfile as sf

    manifest = read_manifest(root)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    lock_path = out_dir / LOCK
    lock: dict[str, dict[str, Any]] = {}
    if lock_path.is_file():
        try:
            lock = json.loads(lock_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            lock = {}
    gen, version = _choose_generator(generator)
    if gen == "synthetic" and generator == "auto":
        log(f"espeak-ng not found: using the synthetic voice generator ({ESPEAK_HINT})")
    made = 0
    for recipe in manifest["voices"]:
        vid = recipe["id"]
        d = out_dir / vid
        wav, txt = d / "ref.wav", d / "ref.txt"
        rsha = recipe_sha256(recipe)
        have = lock.get(vid, {})
        intact = wav.is_file() and txt.is_file() and have.get("sha256") == _sha256(wav.read_bytes())
        if intact and have.get("recipe_sha256") == rsha and not force:
            continue
        if gen == "espeak-ng":
            audio, sr = espeak_voice(recipe)
        else:
            audio, sr = synthetic_voice(recipe), SYNTH_RATE
        d.mkdir(exist_ok=True)
        tmp = d / ".ref.wav.tmp"
        sf.write(tmp, audio, sr, subtype="PCM_16", format="WAV")
        os.replace(tmp, wav)
        _write_atomic(txt, recipe["text"].encode("utf-8"))
        lock[vid] = {"generator": version, "recipe_sha256": rsha, "sha256": _sha256(wav.read_bytes())}
        made += 1
    if made:
        _write_atomic(lock_path, (json.dumps(lock, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))
        log(f"made {made} reference voice(s) with {version} in {out_dir}")
    return {v["id"]: lock[v["id"]] for v in manifest["voices"] if v["id"] in lock}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", choices=("voices", "check", "update"))
    p.add_argument("--out", type=Path, default=ROOT / "voices", help="voices folder (default calibration/voices)")
    p.add_argument("--generator", default="auto", choices=GENERATORS)
    p.add_argument("--force", action="store_true", help="remake every recipe voice")
    args = p.parse_args(argv)
    if args.action == "update":
        m = update_manifest()
        print(f"{ROOT / MANIFEST}: {sum(t['lines'] for t in m['texts'])} lines, corpus {m['corpus_sha256'][:12]}…")
        return 0
    problems = check_manifest()
    if problems:
        print("calibration manifest: " + "; ".join(problems), file=sys.stderr)
        return 1
    if args.action == "voices":
        made = ensure_voices(args.out, generator=args.generator, force=args.force)
        print(f"{len(made)} voices in {args.out}")
    else:
        print(f"{ROOT / MANIFEST}: ok ({len(read_lines())} lines)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
