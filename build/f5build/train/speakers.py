"""Synthetic speakers: espeak-ng accents x voice variants x pitch x speaking rate, seed-fixed.

espeak-ng is a formant synthesiser: each (accent, variant) pair is a distinct timbre, and pitch
(`-p`, 0-99) and rate (`-s`, words per minute) widen every pair into many voices. Variants that do
not sound like a person (robots, whispers, croaks, effects) are left out. Held-out speakers use
variants that no training speaker uses, so cloning them is measured on timbres never seen.

espeak-ng has about sixty such variants, and a DiT trained on them clones the timbres it has heard
far better than new ones (f5build.train.seen). A training speaker may therefore also scale its
variant's formant frequencies (`formant`, percent: a longer or shorter vocal tract, the main cue of a
timbre): espeak-ng has no option for it, so the scaled variant is written as a voice file into a
private copy of espeak-ng's data folder (`--path`), links to the installed files and the new file.
"""

from __future__ import annotations

import atexit
import functools
import os
import random
import re
import shutil
import subprocess
import tempfile
import threading
from dataclasses import asdict, dataclass, replace
from pathlib import Path

ACCENTS = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-029", "en-us-nyc")
# Not a human voice: robots, effects, whispers, the test variant.
EXCLUDED = {
    "Demonic",
    "Half-LifeAnnouncementSystem",
    "UniversalRobot",
    "anikaRobot",
    "whisper",
    "female_whisper",
    "croak",
    "fast_test",
    "Tweaky",
    "Mr_Serious",
    "Kaukovalta",
    *(f"Robosoft{s}" for s in ("", *map(str, range(2, 9)))),
}


@dataclass(frozen=True)
class Speaker:
    """One synthetic voice: the espeak-ng arguments that make it."""

    id: str
    accent: str
    variant: str
    pitch: int
    rate: int
    formant: int = 100
    """The variant's formant frequencies in percent (100: as espeak-ng ships it)."""

    @property
    def voice(self) -> str:
        return f"{self.accent}+{self.variant}" + ("" if self.formant == 100 else f"_f{self.formant}")

    def espeak_args(self) -> list[str]:
        data = [] if self.formant == 100 else ["--path", str(scaled_voices(self.variant, self.formant))]
        return [*data, "-v", self.voice, "-p", str(self.pitch), "-s", str(self.rate)]

    def to_dict(self) -> dict[str, object]:
        """As speakers.json records it (a speaker at 100 % is recorded as corpora before formant scaling were)."""
        out = asdict(self)
        if self.formant == 100:
            del out["formant"]
        return out


FORMANT_RANGE = (70, 130)  # percent: beyond it espeak-ng's voices stop sounding like a person
# The recipe's scales (f5build.train.corpus.CorpusOptions): 96 training speakers over 58 variants become
# 93 distinct timbres, and a DiT continued on them cloned held-out voices better within 5,000 steps
# (docs/training.md, "Formant-scaled voices"); the release has trained on them since step 40,000.
FORMANT_SCALES = (86, 93, 100, 107, 114)
_SCALED_LOCK = threading.Lock()
_scaled_root: Path | None = None


def espeak(*args: str) -> str:
    """The installed espeak-ng's standard output for `args` (`--version`, `--voices=variant`)."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise FileNotFoundError("espeak-ng not found: install it with `apt-get install -y espeak-ng` (Debian/Ubuntu)")
    return subprocess.run([exe, *args], capture_output=True, text=True, check=True, timeout=30).stdout


def espeak_version() -> str:
    return espeak("--version").strip()


@functools.lru_cache(maxsize=1)
def espeak_data() -> Path:
    """The installed espeak-ng's data folder (from `espeak-ng --version`)."""
    out = espeak_version()
    m = re.search(r"Data at:\s*(\S+)", out)
    if m is None or not Path(m.group(1)).is_dir():
        raise RuntimeError(f"cannot find espeak-ng's data folder in `espeak-ng --version`: {out.strip()!r}")
    return Path(m.group(1))


def scale_variant(text: str, name: str, percent: int) -> str:
    """A voice-variant file with every formant's frequency scaled to `percent` (formants 0-8: those the
    file leaves out are at 100 % of the base voice, so they are added at `percent`)."""
    out, scaled = [], set()
    for line in text.splitlines():
        words = line.split()
        if words and words[0] == "name":
            line = f"name {name}"
        elif len(words) >= 3 and words[0] == "formant" and words[1].isdigit():
            words[2] = str(round(int(words[2]) * percent / 100))
            scaled.add(int(words[1]))
            line = " ".join(words)
        out.append(line)
    out += [f"formant {n} {percent} 100 100 100" for n in range(9) if n not in scaled]
    return "\n".join(out) + "\n"


def scaled_voices(variant: str, percent: int) -> Path:
    """An espeak-ng data folder (for `--path`) that also holds `variant` at `percent` formant frequency
    as the variant `<variant>_f<percent>`. One folder per process, removed at exit; thread-safe."""
    global _scaled_root
    if not FORMANT_RANGE[0] <= percent <= FORMANT_RANGE[1]:
        raise ValueError(f"formant scale {percent} % is outside {FORMANT_RANGE[0]}-{FORMANT_RANGE[1]} %")
    with _SCALED_LOCK:
        if _scaled_root is None:
            src = espeak_data()
            root = Path(tempfile.mkdtemp(prefix="f5-espeak-"))
            atexit.register(shutil.rmtree, root, True)
            data = root / "espeak-ng-data"
            # links to every file in real folders (so files can be added); a linked folder is followed
            for parent, _dirs, files in os.walk(src, followlinks=True):
                rel = Path(parent).relative_to(src)
                (data / rel).mkdir(parents=True, exist_ok=True)
                for f in files:
                    (data / rel / f).symlink_to(Path(parent) / f)
            _scaled_root = root
        target = _scaled_root / "espeak-ng-data" / "voices" / "!v" / f"{variant}_f{percent}"
        if not target.exists():
            base = _scaled_root / "espeak-ng-data" / "voices" / variant_files().get(variant, f"!v/{variant}")
            if not base.exists():
                raise FileNotFoundError(f"espeak-ng has no voice variant {variant!r}")
            tmp = target.with_name(target.name + ".tmp")
            tmp.write_text(scale_variant(base.read_text(encoding="utf-8", errors="replace"), target.name, percent))
            tmp.rename(target)
        return _scaled_root


@functools.lru_cache(maxsize=1)
def variant_files() -> dict[str, str]:
    """Every voice variant of the installed espeak-ng: its name -> its file under voices/ (`!v/miguel`
    for "Miguel": `-v en+Miguel` finds it by name, a scaled copy needs the file). Read once per process."""
    out = espeak("--voices=variant")
    return {w[3]: w[4] for w in (line.split() for line in out.splitlines()[1:]) if len(w) >= 5}


def espeak_variants() -> list[str]:
    """The human-sounding voice variants of the installed espeak-ng, sorted (so the split is stable)."""
    return sorted(n for n in variant_files() if n not in EXCLUDED)


def make_speakers(
    train: int, held_out: int, held_out_variants: int, seed: int, formant_scales: tuple[int, ...] = (100,)
) -> tuple[list[Speaker], list[Speaker]]:
    """(training speakers, held-out speakers); held-out ones use variants no training speaker has.

    With `formant_scales`, each training speaker takes one of them (by a hash of the seed and its id, so
    the draw of accents, variants, pitches and rates, and every held-out speaker, is the same as
    without); held-out speakers keep their variants as shipped."""
    variants = espeak_variants()
    if len(variants) <= held_out_variants:
        raise ValueError(
            f"espeak-ng has {len(variants)} usable variants, {held_out_variants} were asked to be held out"
        )
    rng = random.Random(seed)
    shuffled = variants[:]
    rng.shuffle(shuffled)
    kept, train_variants = shuffled[:held_out_variants], shuffled[held_out_variants:]

    def draw(prefix: str, count: int, pool: list[str]) -> list[Speaker]:
        seen: set[tuple[str, str, int, int]] = set()
        out: list[Speaker] = []
        while len(out) < count:
            key = (rng.choice(ACCENTS), rng.choice(pool), rng.randrange(25, 76, 5), rng.randrange(135, 186, 10))
            if key not in seen:
                seen.add(key)
                out.append(Speaker(f"{prefix}{len(out):03d}", *key))
        return out

    trained, held = draw("spk", train, train_variants), draw("heldout", held_out, kept)
    if tuple(formant_scales) != (100,):
        pick = [random.Random(f"{seed}:{s.id}:formant").choice(formant_scales) for s in trained]
        trained = [replace(s, formant=p) for s, p in zip(trained, pick, strict=True)]
    return trained, held
