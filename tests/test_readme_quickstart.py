"""The README's quickstart, run as written, so it cannot drift from the code.

The README marks its quickstart blocks with HTML comments: `<!-- quickstart -->` blocks run in order,
`<!-- quickstart: serve -->` starts the server they talk to (in the background, as its `&` says),
and `<!-- quickstart: setup -->` is the install line, which is checked but not run (this environment
already has the runtime and `openai`; installing is the package index's business, not a test's).

They run in a folder laid out as a clone is after the set-up commands: `artifacts/f5tts-small-en` is
the embedded model's export (the pipeline's first stage), `calibration/voices` the corpus' voices
made by `calibration/corpus.py` (synthetic generator: no system package). The only change to
the commands is the server port, 8000 in the README, which becomes a free one here.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BLOCK = re.compile(r"<!-- quickstart(?:: (?P<tag>[a-z]+))? -->\n```(?P<lang>\w+)\n(?P<body>.*?)```", re.S)
README_PORT = "8000"
TIMEOUT_S = 300


def blocks() -> list[tuple[str, str, str]]:
    """(tag, language, body) of every marked block, in README order."""
    return [(m["tag"] or "run", m["lang"], m["body"]) for m in BLOCK.finditer(README.read_text(encoding="utf-8"))]


def test_readme_marks_a_whole_quickstart() -> None:
    """The markers are there, so the run below cannot pass by finding nothing to run."""
    found = blocks()
    tags = [tag for tag, _, _ in found]
    assert tags.count("setup") == 1 and tags.count("serve") == 1, tags
    run = [body for tag, _, body in found if tag == "run"]
    assert any("f5rt synth" in b for b in run) and any("curl" in b for b in run), run
    assert any(lang == "python" and "OpenAI(" in body for _, lang, body in found), "an openai SDK call"
    setup = next(body for tag, _, body in found if tag == "setup")
    assert "pip install './runtime[onnxruntime,serve]' openai" in setup
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 125, f"README has {len(lines)} lines: move detail to docs/"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_healthy(port: int, server: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"f5rt serve exited with {server.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"f5rt serve never became healthy:\n{log.read_text()}")


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder laid out as a clone after `nox -s pipeline`: artifacts/f5tts-small-en (the embedded
    trained model, exported by the real export stage) and calibration/voices."""
    from f5build.cli import main

    root = tmp_path_factory.mktemp("clone")
    assert main(["export", "--model", "f5tts-small-en", "--artifacts-root", str(root / "artifacts")]) == 0
    voices = root / "calibration" / "voices"
    cmd = [sys.executable, str(ROOT / "calibration" / "corpus.py"), "voices", "--generator", "synthetic"]
    subprocess.run([*cmd, "--out", str(voices)], check=True, capture_output=True, timeout=TIMEOUT_S)
    assert (voices / "en_f1" / "ref.wav").is_file() and (voices / "en_f1" / "ref.txt").is_file()
    return root


def test_readme_quickstart_runs_verbatim(clone: Path) -> None:
    if shutil.which("curl") is None:
        pytest.skip("the quickstart uses curl, which is not installed here")
    port = str(free_port())
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # this env's f5rt first
    log = clone / "serve.log"
    server: subprocess.Popen[bytes] | None = None
    outputs: list[str] = []
    try:
        for tag, lang, body in blocks():
            body = body.replace(f"localhost:{README_PORT}", f"localhost:{port}")
            body = body.replace(f"--port {README_PORT}", f"--port {port}")
            if tag == "setup":
                continue
            if tag == "serve":
                command = body.strip()
                assert command.endswith("&"), "the serve block runs the server in the background"
                with log.open("wb") as out:
                    server = subprocess.Popen(
                        ["bash", "-c", f"exec {command[:-1]}"], cwd=clone, env=env, stdout=out, stderr=out
                    )
                wait_healthy(int(port), server, log)
                continue
            argv = [sys.executable, "-c", body] if lang == "python" else ["bash", "-euo", "pipefail", "-c", body]
            r = subprocess.run(argv, cwd=clone, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
            assert r.returncode == 0, f"README block failed ({r.returncode}):\n{body}\n{r.stdout}\n{r.stderr}"
            outputs.append(r.stdout)
    finally:
        if server is not None:
            server.terminate()
            server.wait(30)
    assert server is not None, "the README starts a server"
    for name in ("hello.wav", "openai.wav"):
        audio, rate = sf.read(clone / name)
        assert rate == 24000 and len(audio) > 0 and abs(audio).max() > 0, name
    said = "".join(outputs)
    assert "text_encoder" in said and "hello.wav:" in said, said  # f5rt info, f5rt synth's summary line
    reply = json.loads((clone / "tts.json").read_text(encoding="utf-8"))  # what curl saved
    assert (reply["voice_id"], reply["seed"], reply["format"]) == ("en_f1", 1, "wav"), reply.keys()
    audio, rate = sf.read(io.BytesIO(base64.b64decode(reply["audio_base64"])))
    assert rate == reply["sample_rate"] == 24000 and len(audio) == reply["waveform_len"] > 0


def test_doc_links_stay_inside_the_repository() -> None:
    """Every relative link of the README and docs/ names a file of the repository (and its heading)."""
    link = re.compile(r"\]\(([^)\s]+)\)")
    pages = [
        README,
        *sorted((ROOT / "docs").glob("*.md")),
        ROOT / "artifacts" / "README.md",
        ROOT / "reports" / "README.md",
    ]
    assert len(pages) >= 8, pages
    bad = []
    for page in pages:
        text = page.read_text(encoding="utf-8")
        assert "../shared" not in text, f"{page.name} points outside the repository"
        for target in link.findall(text):
            if target.startswith(("http://", "https://")):
                continue
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            if ROOT not in dest.parents or not dest.exists():
                bad.append(f"{page.name}: {target}")
                continue
            if anchor:
                heads = [
                    h.strip("# ").lower() for h in dest.read_text(encoding="utf-8").splitlines() if h.startswith("#")
                ]
                slugs = {re.sub(r"[^a-z0-9 -]", "", h).replace(" ", "-") for h in heads}
                if anchor not in slugs:
                    bad.append(f"{page.name}: {target} (no such heading)")
    assert not bad, bad
