"""Request bodies: bounded reads, JSON content types, and strict multipart voice uploads.

Sizes are enforced while reading (413 as soon as a body passes its limit, before it is all in
memory), a body shorter than its Content-Length is refused (400) instead of parsed, and multipart is
parsed by hand so nothing is decoded leniently.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from f5rt.limits import Limits
from f5rt.service.errors import ServiceError
from f5rt.service.requests import check_text, parse_json_object

if TYPE_CHECKING:
    from starlette.requests import Request


def media_type(request: Request) -> tuple[str, dict[str, str]]:
    """(lower-cased media type, parameters) of the request's Content-Type."""
    raw = request.headers.get("content-type", "")
    parts = [p.strip() for p in raw.split(";")]
    params = {}
    for p in parts[1:]:
        if "=" in p:
            k, v = p.split("=", 1)
            params[k.strip().lower()] = v.strip().strip('"')
    return parts[0].lower(), params


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refusing early (413) when it is larger than `limit` and 400 when cut short."""
    from starlette.requests import ClientDisconnect

    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise ServiceError(400, "invalid_content_length", "Content-Length is not a number")
        if int(declared) > limit:
            raise ServiceError(
                413, "body_too_large", f"request body of {declared} bytes exceeds the {limit}-byte limit"
            )
    chunks: list[bytes] = []
    total = 0
    try:
        async for chunk in request.stream():
            total += len(chunk)
            if total > limit:
                raise ServiceError(413, "body_too_large", f"request body exceeds the {limit}-byte limit")
            chunks.append(chunk)
    except ClientDisconnect:
        raise ServiceError(
            400, "truncated_body", "the client closed the connection before the body was complete"
        ) from None
    body = b"".join(chunks)
    if declared is not None and len(body) != int(declared):
        raise ServiceError(400, "truncated_body", f"body has {len(body)} bytes, Content-Length said {declared}")
    return body


async def read_json(request: Request, limits: Limits) -> dict[str, object]:
    media, params = media_type(request)
    if media != "application/json":
        raise ServiceError(
            415, "unsupported_media_type", f"Content-Type must be application/json, got {media or 'none'!r}"
        )
    if params.get("charset", "utf-8").lower() not in ("utf-8", "utf8"):
        raise ServiceError(415, "unsupported_media_type", "only the utf-8 charset is accepted")
    return parse_json_object(await read_body(request, limits.max_body_bytes))


@dataclass
class _RawPart:
    headers: dict[bytes, bytes] = field(default_factory=dict)
    data: bytearray = field(default_factory=bytearray)


@dataclass(frozen=True)
class FormPart:
    name: str
    filename: str | None
    data: bytes


def parse_multipart(raw: bytes, boundary: str, max_parts: int = 8) -> list[FormPart]:
    """A complete multipart/form-data body -> its parts, strictly.

    Starlette's form parser decodes undecodable field bytes as latin-1 and python-multipart drops a
    part that is cut short without a word; a voice upload must do neither, so the body (already in
    memory, bounded by max_upload_bytes) is parsed here with python-multipart's low-level parser.
    """
    try:
        from python_multipart.multipart import MultipartParser, parse_options_header
    except ImportError:  # python-multipart < 0.0.13
        from multipart.multipart import MultipartParser, parse_options_header  # type: ignore[no-redef,import-untyped,import-not-found,unused-ignore]

    try:
        delimiter = boundary.encode("ascii")
    except UnicodeEncodeError:
        raise ServiceError(400, "invalid_multipart", "multipart boundary is not ASCII") from None
    if b"--" + delimiter + b"--" not in raw:  # the close delimiter cannot occur inside a part
        raise ServiceError(400, "truncated_body", "multipart body is truncated (no closing boundary)")
    parts: list[_RawPart] = []
    name, value = bytearray(), bytearray()

    def begin() -> None:
        parts.append(_RawPart())

    def header_end() -> None:
        parts[-1].headers[bytes(name).strip().lower()] = bytes(value).strip()
        name.clear()
        value.clear()

    def on_field(d: bytes, s: int, e: int) -> None:
        name.extend(d[s:e])

    def on_value(d: bytes, s: int, e: int) -> None:
        value.extend(d[s:e])

    def on_data(d: bytes, s: int, e: int) -> None:
        parts[-1].data.extend(d[s:e])

    callbacks = {
        "on_part_begin": begin,
        "on_header_field": on_field,
        "on_header_value": on_value,
        "on_header_end": header_end,
        "on_part_data": on_data,
    }
    try:
        parser = MultipartParser(delimiter, callbacks)  # type: ignore[arg-type]
        parser.write(raw)
        parser.finalize()
    except Exception as e:  # python-multipart's parse errors
        raise ServiceError(400, "invalid_multipart", f"invalid multipart body: {e}") from None
    if len(parts) > max_parts:
        raise ServiceError(400, "invalid_multipart", f"too many form parts ({len(parts)} > {max_parts})")
    out = []
    for part in parts:
        kind, opts = parse_options_header(part.headers.get(b"content-disposition", b""))
        if kind != b"form-data" or b"name" not in opts:
            raise ServiceError(400, "invalid_multipart", "every part needs 'Content-Disposition: form-data; name=...'")
        try:
            part_name = opts[b"name"].decode("utf-8")
            filename = opts[b"filename"].decode("utf-8") if b"filename" in opts else None
        except UnicodeDecodeError:
            raise ServiceError(400, "invalid_multipart", "a part name is not valid UTF-8") from None
        out.append(FormPart(part_name, filename, bytes(part.data)))
    return out


async def read_voice_upload(request: Request, limits: Limits) -> tuple[bytes, str]:
    """(audio file bytes, transcript) of a voice upload: exactly an `audio` file and a `text` field."""
    media, params = media_type(request)
    if media != "multipart/form-data":
        raise ServiceError(
            415, "unsupported_media_type", f"Content-Type must be multipart/form-data, got {media or 'none'!r}"
        )
    boundary = params.get("boundary", "")
    if not boundary:
        raise ServiceError(400, "invalid_multipart", "multipart boundary missing from Content-Type")
    raw = await read_body(request, limits.max_upload_bytes)
    parts = parse_multipart(raw, boundary)
    names = [p.name for p in parts]
    unknown = sorted(set(names) - {"audio", "text"})
    if unknown:
        raise ServiceError(400, "unknown_field", f"unknown form field(s) {unknown}; expected 'audio' and 'text'")
    if len(names) != len(set(names)):
        raise ServiceError(400, "duplicate_key", "a form field appears more than once")
    by_name = {p.name: p for p in parts}
    audio, text = by_name.get("audio"), by_name.get("text")
    if audio is None or audio.filename is None:
        raise ServiceError(400, "missing_field", "form field 'audio' (a file) is required")
    if text is None or text.filename is not None:
        raise ServiceError(400, "missing_field", "form field 'text' (the transcript, a plain field) is required")
    if not audio.data:
        raise ServiceError(422, "invalid_audio", "the uploaded audio file is empty")
    try:
        transcript = text.data.decode("utf-8")
    except UnicodeDecodeError:
        raise ServiceError(400, "invalid_text", "'text' is not valid UTF-8") from None
    return audio.data, check_text(transcript, "text", limits.max_ref_text_chars)
