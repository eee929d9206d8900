"""API keys: who may synthesize, who may change voices, and where the server may listen without them.

Two kinds of key, sent as `Authorization: Bearer <key>` (what OpenAI clients send):

* inference keys (`--api-key`, `F5RT_API_KEY`): /api/tts, /v1/audio/speech, /v1/models, GET /api/voices
  and, with `--metrics-auth`, /metrics. With none configured these routes are open.
* admin keys (`--admin-key`, `F5RT_ADMIN_KEY`): also voice mutation (POST/PUT/DELETE /api/voices/...),
  which an inference key never grants. Once any key is configured, voice mutation needs an admin key
  even when inference is open; with no admin key configured it is then refused to everyone.

With no key at all the server is fully open, which `serve` allows only on a loopback address (or
with `--insecure-no-auth`): anyone who can reach the port could otherwise use the accelerator and
replace every voice. `/api/health` is always open (load balancers and orchestrators probe it).

Keys are compared with hmac.compare_digest against every configured key (no early exit), so timing
reveals neither a key's content nor which key matched. 401 (no or unknown key) and 403 (a valid key
without the right) answer the service's JSON error shape with `WWW-Authenticate: Bearer`.
"""

from __future__ import annotations

import enum
import hmac
import ipaddress
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from f5rt.server.errors import error_body

MIN_KEY_CHARS = 16
_REALM = 'Bearer realm="f5rt"'


class Scope(enum.Enum):
    OPEN = "open"
    INFERENCE = "inference"
    ADMIN = "admin"


@dataclass(frozen=True)
class AuthConfig:
    """The configured keys (bytes, for compare_digest) and whether /metrics needs a key."""

    api_keys: tuple[bytes, ...] = ()
    admin_keys: tuple[bytes, ...] = ()
    metrics_auth: bool = False

    @classmethod
    def from_keys(
        cls, api_keys: Iterable[str] = (), admin_keys: Iterable[str] = (), metrics_auth: bool = False
    ) -> AuthConfig:
        return cls(_checked(api_keys, "API key"), _checked(admin_keys, "admin key"), metrics_auth)

    @property
    def enabled(self) -> bool:
        return bool(self.api_keys or self.admin_keys)

    def scope(self, method: str, path: str) -> Scope:
        """The right a request needs. Unknown paths need inference rights: a 404 must not leak the routes."""
        if path == "/api/health":
            return Scope.OPEN
        if path == "/metrics" and not self.metrics_auth:
            return Scope.OPEN
        if path.startswith("/api/voices/") and method not in ("GET", "HEAD"):
            return Scope.ADMIN
        return Scope.INFERENCE

    def check(self, scope: Scope, authorization: str | None) -> tuple[int, str, str] | None:
        """None when allowed, else (status, code, message)."""
        if scope is Scope.OPEN or not self.enabled:
            return None
        if scope is Scope.INFERENCE and not self.api_keys:
            return None  # inference is open; only voices are guarded
        token = _bearer(authorization)
        if token is None:
            return 401, "unauthorized", "missing API key: send 'Authorization: Bearer <key>'"
        is_admin = _matches(token, self.admin_keys)
        is_user = _matches(token, self.api_keys)
        if not (is_admin or is_user):
            return 401, "unauthorized", "invalid API key"
        if scope is Scope.ADMIN and not is_admin:
            if not self.admin_keys:
                return (
                    403,
                    "forbidden",
                    "voice changes are disabled: start the server with --admin-key (F5RT_ADMIN_KEY)",
                )
            return 403, "forbidden", "changing voices needs an admin key (--admin-key), not an inference key"
        return None


def _checked(keys: Iterable[str], what: str) -> tuple[bytes, ...]:
    out = []
    for key in keys:
        if len(key) < MIN_KEY_CHARS or not key.isascii() or not key.isprintable() or any(c.isspace() for c in key):
            raise ValueError(
                f"an {what} must be at least {MIN_KEY_CHARS} printable ASCII characters without spaces "
                "(make one with: python -c 'import secrets; print(secrets.token_urlsafe(32))')"
            )
        out.append(key.encode("ascii"))
    return tuple(dict.fromkeys(out))


def _bearer(header: str | None) -> bytes | None:
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or not token.isascii():
        return None
    return token.encode("ascii")


def _matches(token: bytes, keys: tuple[bytes, ...]) -> bool:
    found = False
    for key in keys:  # every key is compared: the time taken does not depend on which one matched
        found |= hmac.compare_digest(token, key)
    return found


def split_keys(values: Iterable[str | None]) -> list[str]:
    """Keys from repeated flags and comma-separated environment values, blanks dropped."""
    return [k.strip() for v in values if v for k in v.split(",") if k.strip()]


def is_loopback(host: str) -> bool:
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything, so it counts as exposed


def check_bind(host: str, auth: AuthConfig, insecure_no_auth: bool) -> None:
    """Refuse to listen beyond loopback with inference open, unless explicitly told it is wanted."""
    if is_loopback(host) or auth.api_keys or insecure_no_auth:
        return
    raise SystemExit(
        f"f5rt serve: refusing to listen on {host} without API keys: anyone who can reach the port could "
        "synthesize on this device" + ("" if auth.admin_keys else " and replace or delete every voice") + ". "
        "Set --api-key / F5RT_API_KEY (and --admin-key / F5RT_ADMIN_KEY for voice changes), "
        "bind 127.0.0.1, or pass --insecure-no-auth if an authenticating proxy guards the port."
    )


class AuthMiddleware:
    """Pure ASGI: refuses before routing, so a refused request never reads its body or reaches a handler."""

    def __init__(self, app: Any, auth: AuthConfig) -> None:
        self.app, self.auth = app, auth

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not self.auth.enabled:
            await self.app(scope, receive, send)
            return
        header = None
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                header = value.decode("latin-1")
                break
        refusal = self.auth.check(self.auth.scope(scope.get("method", "GET"), scope.get("path", "")), header)
        if refusal is None:
            await self.app(scope, receive, send)
            return
        status, code, message = refusal
        challenge = _REALM if status == 401 else f'{_REALM}, error="insufficient_scope"'
        body = json.dumps(error_body(code, message)).encode("utf-8")
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"www-authenticate", challenge.encode()),
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
