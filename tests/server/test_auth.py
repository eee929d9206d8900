"""API keys on every route: no key, a wrong key, an inference key, an admin key; and the bind rule.

One app with both kinds of key answers the matrix (route x credential); smaller apps check the
partial configurations (inference open with an admin key, inference keys without an admin key,
/metrics keyed). A refusal is 401 or 403 in the service's JSON error shape with WWW-Authenticate.
"""

from __future__ import annotations

import argparse
import io
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from conftest import SR, speechlike

pytest.importorskip("fastapi")

from starlette.testclient import TestClient

from f5rt.limits import Limits
from f5rt.server import AuthConfig, create_app
from f5rt.server.auth import check_bind, is_loopback
from f5rt.server.cli import auth_config
from f5rt.synthesizer import SynthesisOptions, Synthesizer
from f5rt.voices import VoiceStore

USER = "user-key-0123456789abcdef"
USER2 = "user-key-second-0123456789"
ADMIN = "admin-key-0123456789abcdef"


def wav_of(samples: np.ndarray, sr: int = SR) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, samples, sr, format="WAV", subtype="PCM_16")
    return buf.getvalue()


UPLOAD = {"files": {"audio": ("a.wav", wav_of(speechlike(1.0, SR, 9)), "audio/wav")}, "data": {"text": "One two."}}
TTS = {"json": {"text": "Hi.", "nfe_step": 4, "seed": 1}}
SPEECH = {"json": {"model": "tts-1", "input": "Hi.", "voice": "alice", "response_format": "pcm", "seed": 1}}

# (method, path, request kwargs, the right it needs with both kinds of key configured)
ROUTES = [
    ("POST", "/api/tts", TTS, "inference"),
    ("POST", "/v1/audio/speech", SPEECH, "inference"),
    ("GET", "/v1/models", {}, "inference"),
    ("GET", "/v1/models/f5-tts", {}, "inference"),
    ("GET", "/api/voices", {}, "inference"),
    ("POST", "/api/voices/carol", UPLOAD, "admin"),
    ("PUT", "/api/voices/carol", UPLOAD, "admin"),
    ("DELETE", "/api/voices/carol", {}, "admin"),
    ("GET", "/api/nothing", {}, "inference"),  # unknown paths are not revealed without a key
    ("GET", "/api/health", {}, "open"),
    ("GET", "/metrics", {}, "open"),
]
CREDENTIALS = {
    "none": {},
    "wrong": {"Authorization": "Bearer not-a-key-0123456789abcdef"},
    "prefix": {"Authorization": f"Bearer {USER[:-1]}"},
    "basic": {"Authorization": f"Basic {USER}"},
    "inference": {"Authorization": f"Bearer {USER}"},
    "inference2": {"Authorization": f"bearer {USER2}"},  # the scheme is case-insensitive
    "admin": {"Authorization": f"Bearer {ADMIN}"},
}


@pytest.fixture
def make_client(synth: Synthesizer, voices_dir: Path, tmp_path: Path) -> Iterator[Any]:
    clients: list[TestClient] = []

    def make(auth: AuthConfig) -> TestClient:
        root = tmp_path / f"voices{len(clients)}"
        shutil.copytree(voices_dir, root, ignore=shutil.ignore_patterns(".cache"))
        app = create_app(
            synth, VoiceStore(root), Limits(), default_voice="alice", defaults=SynthesisOptions(nfe=4), auth=auth
        )
        client = TestClient(app)
        client.__enter__()
        clients.append(client)
        deadline = time.monotonic() + 30
        while not app.state.batcher.ready and time.monotonic() < deadline:
            time.sleep(0.01)
        return client

    yield make
    for c in clients:
        c.__exit__(None, None, None)


def call(client: TestClient, method: str, path: str, kwargs: dict[str, Any], headers: dict[str, str]) -> Any:
    return client.request(method, path, headers=headers, **kwargs)


def assert_refused(r: Any, status: int) -> None:
    assert r.status_code == status, f"{r.status_code} {r.text[:200]}"
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"} and body["error"]["message"]
    assert body["error"]["code"] == {401: "unauthorized", 403: "forbidden"}[status]
    challenge = r.headers["www-authenticate"]
    assert challenge.startswith("Bearer")
    assert ('error="insufficient_scope"' in challenge) == (status == 403)


def expected(need: str, cred: str) -> int | None:
    """The refusal status, or None when the request must get past auth."""
    if need == "open" or cred == "admin":
        return None
    if cred in ("inference", "inference2"):
        return 403 if need == "admin" else None
    return 401


@pytest.mark.parametrize("cred", list(CREDENTIALS))
def test_every_route_with_every_credential(make_client: Any, cred: str) -> None:
    client = make_client(AuthConfig.from_keys([USER, USER2], [ADMIN]))
    for method, path, kwargs, need in ROUTES:
        r = call(client, method, path, kwargs, CREDENTIALS[cred])
        status = expected(need, cred)
        if status is not None:
            assert_refused(r, status)
            continue
        assert r.status_code not in (401, 403), f"{method} {path} with {cred}: {r.status_code} {r.text[:200]}"
        want = {
            ("POST", "/api/voices/carol"): 201,  # created, then replaced, then deleted: in this order
            ("PUT", "/api/voices/carol"): 200,
            ("DELETE", "/api/voices/carol"): 200,
            ("GET", "/api/nothing"): 404,
        }.get((method, path), 200)
        assert r.status_code == want, f"{method} {path} with {cred}: {r.status_code} {r.text[:200]}"


def test_a_refused_mutation_changes_nothing(make_client: Any) -> None:
    client = make_client(AuthConfig.from_keys([USER], [ADMIN]))
    for cred in ("none", "wrong", "inference"):
        call(client, "POST", "/api/voices/mallory", UPLOAD, CREDENTIALS[cred])
        call(client, "DELETE", "/api/voices/alice", {}, CREDENTIALS[cred])
    voices = client.get("/api/voices", headers=CREDENTIALS["inference"]).json()["voices"]
    assert [v["voice_id"] for v in voices] == ["alice", "bob"]
    # The admin key does what the others could not, and the new voice serves inference keys.
    assert call(client, "POST", "/api/voices/mallory", UPLOAD, CREDENTIALS["admin"]).status_code == 201
    r = client.post(
        "/api/tts", json={"text": "Hi.", "voice_id": "mallory", "nfe_step": 4}, headers=CREDENTIALS["inference"]
    )
    assert r.status_code == 200 and r.json()["voice_id"] == "mallory"


def test_open_inference_still_guards_voices(make_client: Any) -> None:
    """An admin key alone: inference is open to all, voice changes are not."""
    client = make_client(AuthConfig.from_keys([], [ADMIN]))
    assert call(client, "POST", "/api/tts", TTS, {}).status_code == 200
    assert call(client, "GET", "/api/voices", {}, {}).status_code == 200
    assert_refused(call(client, "POST", "/api/voices/carol", UPLOAD, {}), 401)
    assert_refused(call(client, "DELETE", "/api/voices/alice", {}, CREDENTIALS["wrong"]), 401)
    assert call(client, "POST", "/api/voices/carol", UPLOAD, CREDENTIALS["admin"]).status_code == 201


def test_inference_keys_without_an_admin_key_disable_voice_changes(make_client: Any) -> None:
    client = make_client(AuthConfig.from_keys([USER]))
    r = call(client, "POST", "/api/voices/carol", UPLOAD, CREDENTIALS["inference"])
    assert_refused(r, 403)
    assert "--admin-key" in r.json()["error"]["message"]
    assert_refused(call(client, "DELETE", "/api/voices/alice", {}, CREDENTIALS["none"]), 401)


def test_metrics_keyed_by_flag_health_never(make_client: Any) -> None:
    client = make_client(AuthConfig.from_keys([USER], [ADMIN], metrics_auth=True))
    assert_refused(client.get("/metrics"), 401)
    m = client.get("/metrics", headers=CREDENTIALS["inference"])
    assert m.status_code == 200
    assert 'f5rt_requests_total{route="/metrics",status="401"}' in m.text  # refusals are counted
    assert client.get("/api/health").status_code == 200


def test_keys_from_flags_and_environment() -> None:
    args = argparse.Namespace(api_key=[USER], admin_key=[], metrics_auth=False)
    auth = auth_config(args, {"F5RT_API_KEY": f" {USER2} ,{USER}", "F5RT_ADMIN_KEY": ADMIN})
    assert auth.api_keys == (USER.encode(), USER2.encode()) and auth.admin_keys == (ADMIN.encode(),)
    assert not auth_config(argparse.Namespace(api_key=[], admin_key=[], metrics_auth=False), {}).enabled
    for bad in ("short", "has a space in it 0123456789", "naïve-key-0123456789abcdef"):
        with pytest.raises(ValueError, match="at least 16 printable ASCII"):
            AuthConfig.from_keys([bad])


def test_non_loopback_bind_without_keys_is_refused() -> None:
    for host in ("127.0.0.1", "::1", "localhost", "[::1]", "127.0.0.2"):
        assert is_loopback(host)
        check_bind(host, AuthConfig(), insecure_no_auth=False)
    for host in ("0.0.0.0", "::", "192.168.1.20", "tts.example.com"):
        assert not is_loopback(host)
        with pytest.raises(SystemExit, match="--api-key"):
            check_bind(host, AuthConfig(), insecure_no_auth=False)
        with pytest.raises(SystemExit, match="--insecure-no-auth"):
            check_bind(host, AuthConfig.from_keys([], [ADMIN]), insecure_no_auth=False)  # inference still open
        check_bind(host, AuthConfig.from_keys([USER]), insecure_no_auth=False)
        check_bind(host, AuthConfig(), insecure_no_auth=True)


def test_serve_refuses_before_loading_anything(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`f5rt serve --host 0.0.0.0` without keys exits at once, with the fix in the message."""
    from f5rt.cli import main

    monkeypatch.delenv("F5RT_API_KEY", raising=False)
    monkeypatch.delenv("F5RT_ADMIN_KEY", raising=False)
    argv = ["serve", "--artifacts", str(tmp_path / "missing"), "--voices", str(tmp_path), "--host", "0.0.0.0"]
    with pytest.raises(SystemExit, match="refusing to listen on 0.0.0.0 without API keys"):
        main(argv)
    monkeypatch.setenv("F5RT_API_KEY", "short")
    assert main(argv) == 2  # a bad key is a clean CLI error, not a traceback
