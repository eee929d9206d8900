"""Synthetic speakers: espeak-ng accents x voice variants x pitch x speaking rate, seed-fixed.

espeak-ng is a formant synthesiser: each (accent, variant) pair is a distinct timbre, and pitch
(`-p`, 0-99) and rate (`-s`, words per minute) widen every pair into many voices. Variants that do
not sound like a person (robots, whispers, croaks, effects) are left out. Held-out speakers use
variants that no training speaker uses, so cloning them is measured on timbres never seen.
"""

from __future__ import annotations

import random
import shutil
import subprocess
from dataclasses import asdict, dataclass

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

    @property
    def voice(self) -> str:
        return f"{self.accent}+{self.variant}"

    def espeak_args(self) -> list[str]:
        return ["-v", self.voice, "-p", str(self.pitch), "-s", str(self.rate)]

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def espeak_variants() -> list[str]:
    """The human-sounding voice variants of the installed espeak-ng, sorted (so the split is stable)."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise FileNotFoundError("espeak-ng not found: install it with `apt-get install -y espeak-ng` (Debian/Ubuntu)")
    out = subprocess.run([exe, "--voices=variant"], capture_output=True, text=True, check=True, timeout=30).stdout
    names = [line.split()[3] for line in out.splitlines()[1:] if len(line.split()) >= 4]
    return sorted(n for n in set(names) if n not in EXCLUDED)


def make_speakers(train: int, held_out: int, held_out_variants: int, seed: int) -> tuple[list[Speaker], list[Speaker]]:
    """(training speakers, held-out speakers); held-out ones use variants no training speaker has."""
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

    return draw("spk", train, train_variants), draw("heldout", held_out, kept)
