"""Bad input stopped at the door: characters PostgreSQL refuses and integers beyond its columns.

PostgreSQL refuses NUL in text, and no driver can encode a lone UTF-16 surrogate; either one reaching a
query is a 500 (SQLite fails on surrogates too). The other C0 controls are stored but are never what a
person meant, and they break logs, exports and e-mail headers. So, per channel:

* query strings and form bodies (urlencoded, and multipart text fields) lose them silently, before
  the app reads them (CleanInputMiddleware): nothing a person could see is lost;
* a JSON body carrying one is refused with 422 naming the field (refuse_bad_json): a program sent it,
  and silently changing what a program stores would hide its bug;
* a path carrying one, or an integer id no column can hold, names nothing: 404 (refuse_bad_path).

Tab, line feed and carriage return are kept everywhere: people type them.

Forms and query strings also lose the invisible bidirectional embedding, override and isolate controls
(U+202A–U+202E, U+2066–U+2069): nobody types them on purpose, and one in a reason or a name reverses the
text the app prints after it. A JSON body or a path carrying one is refused like any other control.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Awaitable, Callable, MutableMapping
from functools import lru_cache
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from python_multipart.multipart import parse_options_header

from app.errors import NotFound
from app.parsing import BAD_CHARS_MESSAGE, INT32_MAX, clean_text, has_bad_chars

# --- forms and query strings: stripped --------------------------------------------------------------

# In urlencoded text: an escape of a stripped control, a raw one, and a '%' that starts no escape (made
# '%25', which decodes to the same '%': otherwise dropping '%00' from '%0%001' would leave a new '%01').
# Bidi controls arrive escaped in urlencoded text (%E2%80%AA-%AE, %E2%81%A6-%A9: Starlette decodes raw
# bytes there as latin-1, so raw ones cannot become them) and raw in multipart text (UTF-8).
_URLENCODED_FIXES = re.compile(rb"%(?:0[0-8bBcCeEfF]|1[0-9a-fA-F])|%(?![0-9a-fA-F]{2})|[\x00-\x08\x0b\x0c\x0e-\x1f]"
                               rb"|%[eE]2%80%[aA][a-eA-E]|%[eE]2%81%[aA][6-9]")
_RAW_CONTROLS = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f]|\xe2\x80[\xaa-\xae]|\xe2\x81[\xa6-\xa9]")
_BIDI_HEAD = re.compile(rb"%[eE]2(?:%8[01])?\Z")  # with finditer(data, start, end): \Z is at `end`
_PARTIAL_BIDI = (b"\xe2\x80", b"\xe2\x81", b"\xe2")


def _whole_characters(part: bytes) -> bytes:
    """`part` less a last byte or two that may start a bidi control (held until the next chunk)."""
    return part[: len(part) - next((len(p) for p in _PARTIAL_BIDI if part.endswith(p)), 0)]


def _urlencoded_fix(match: re.Match[bytes]) -> bytes:
    return b"%25" if match.group() == b"%" else b""


def clean_urlencoded(data: bytes) -> bytes:
    """A complete query string or urlencoded body that decodes to the same fields, minus bad characters: removed
    until none is left, since removing one may join what stood around it into another (`%E2%80%00%AA`).

    Lone surrogates cannot come through this channel: their UTF-8 forms are invalid and decode to U+FFFD.
    """
    if b"%" not in data and not _RAW_CONTROLS.search(data):
        return data
    while True:
        cleaned = _URLENCODED_FIXES.sub(_urlencoded_fix, data)
        if cleaned == data:
            return cleaned
        data = cleaned


def _strip_raw(data: bytes) -> bytes:
    """`_RAW_CONTROLS` removed until none is left (removing one may join the bytes around it into another)."""
    while True:
        cleaned = _RAW_CONTROLS.sub(b"", data)
        if cleaned == data:
            return cleaned
        data = cleaned


class _UrlencodedStream:
    def __init__(self) -> None:
        self._carry = b""

    def feed(self, chunk: bytes, final: bool) -> bytes:
        data, self._carry = self._carry + chunk, b""
        if not final:  # '%' or '%4' (or '%E2%80%A') at the end: the next chunk says what it is
            cut = data.find(b"%", max(0, len(data) - 8))
            if cut != -1:  # not inside a bidi control's escapes either
                cut = next((m.start() for m in _BIDI_HEAD.finditer(data, max(0, cut - 6), cut)), cut)
                data, self._carry = data[:cut], data[cut:]
        cleaned = clean_urlencoded(data)
        if not final:  # what a removal left at the end may start a bidi control the next chunk ends: held too
            head = _BIDI_HEAD.search(cleaned)
            if head is not None:
                cleaned, self._carry = cleaned[:head.start()], cleaned[head.start():] + self._carry
        return cleaned


_FILENAME = re.compile(rb"filename\*?\s*=", re.IGNORECASE)
_MAX_HEADER_MEMORY = 64 * 1024


class _MultipartStream:
    """Strips controls from part headers and text fields, streaming; file contents pass untouched.

    Works on bytes, which is sound for ASCII-transparent charsets only (the middleware refuses others):
    the boundary has no control characters (checked), so stripping never touches a delimiter.
    """

    def __init__(self, boundary: bytes) -> None:
        self._delimiter = b"\r\n--" + boundary
        self._buffer = b"\r\n"  # the first delimiter has no CRLF before it; this one is not sent on
        self._skip = 2
        self._in_headers = False
        self._headers = b""
        self._text = True

    def _cleaned(self, part: bytes, *, final: bool, text: bool) -> bytes:
        """A piece of a part sent on before its end: controls stripped from text, and a last byte or two that may
        start a bidi control (also one a removal left) put back, for the next chunk to say what it is."""
        cleaned = _strip_raw(part) if text else part
        if final:
            return cleaned
        whole = _whole_characters(cleaned)
        self._buffer = cleaned[len(whole):] + self._buffer
        return whole

    def feed(self, chunk: bytes, final: bool) -> bytes:
        self._buffer += chunk
        out: list[bytes] = []
        while True:
            if self._in_headers:
                end = self._buffer.find(b"\r\n\r\n")
                if end == -1:
                    keep = 0 if final else 3  # a CRLFCRLF may straddle chunks
                    part = self._buffer[: max(0, len(self._buffer) - keep)]
                    self._buffer = self._buffer[len(part):]
                    if len(self._headers) < _MAX_HEADER_MEMORY:
                        self._headers += part
                    out.append(self._cleaned(part, final=final, text=True))
                    break
                part = self._buffer[:end]
                self._headers += part
                out.append(_strip_raw(part) + b"\r\n\r\n")
                self._text = not _FILENAME.search(self._headers)
                self._buffer = self._buffer[end + 4:]
                self._in_headers = False
            else:
                at = self._buffer.find(self._delimiter)
                if at == -1:
                    keep = 0 if final else len(self._delimiter) - 1
                    part = self._buffer[: max(0, len(self._buffer) - keep)]
                    self._buffer = self._buffer[len(part):]
                    out.append(self._cleaned(part, final=final, text=self._text))
                    break
                part = self._buffer[:at]
                out.append((_strip_raw(part) if self._text else part) + self._delimiter)
                self._buffer = self._buffer[at + len(self._delimiter):]
                self._in_headers, self._headers = True, b""
        data = b"".join(out)
        if self._skip:
            taken = min(self._skip, len(data))
            data, self._skip = data[taken:], self._skip - taken
        return data


@lru_cache(maxsize=64)
def _ascii_transparent(charset: str) -> bool:
    """Whether the charset decodes every ASCII byte to itself (so controls can be stripped as bytes)."""
    try:
        codec = codecs.lookup(charset)
    except LookupError:
        return True  # Starlette falls back to latin-1
    try:
        return codec.decode(bytes(range(128)))[0] == "".join(map(chr, range(128)))
    except (UnicodeError, ValueError):
        return False


Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class CleanInputMiddleware:
    """Strips C0 controls but tab, CR and LF from query strings and form bodies (see the module's text).

    Streaming: each body chunk is passed on as it comes (less the last few bytes, held until the next
    chunk tells whether they start an escape or a delimiter), so a body-size cap around or inside it
    still works. Content-Length is left as sent: the body can only get shorter, and nothing downstream
    reads an exact length.
    """

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        query = scope.get("query_string") or b""
        if query:
            scope["query_string"] = clean_urlencoded(query)
        content_type = next((v for k, v in scope.get("headers") or () if k == b"content-type"), b"")
        media_type, options = parse_options_header(content_type)
        stream: _UrlencodedStream | _MultipartStream
        if media_type == b"application/x-www-form-urlencoded":
            stream = _UrlencodedStream()
        elif media_type == b"multipart/form-data":
            boundary = options.get(b"boundary", b"")
            charset = options.get(b"charset", b"utf-8").decode("latin-1")
            if not boundary or _RAW_CONTROLS.search(boundary) or not _ascii_transparent(charset.strip().lower()):
                await _refuse(send, b"Send forms as multipart/form-data in UTF-8, with a printable boundary.")
                return
            stream = _MultipartStream(boundary)
        else:
            await self.app(scope, receive, send)
            return

        async def cleaned_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                final = not message.get("more_body", False)
                message = {**message, "body": stream.feed(message.get("body", b""), final)}
            return message

        await self.app(scope, cleaned_receive, send)


async def _refuse(send: Send, text: bytes) -> None:
    await send({"type": "http.response.start", "status": 415,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                            (b"content-length", str(len(text)).encode())]})
    await send({"type": "http.response.body", "body": text})


# --- JSON bodies: refused; paths: not found -------------------------------------------------------------


def _bad_json_fields(data: Any) -> list[tuple[Any, ...]]:
    """Where in a parsed JSON value a key or a string carries a bad character (iteratively: JSON nests
    deeper than Python's recursion limit allows)."""
    found: list[tuple[Any, ...]] = []
    pending: list[tuple[tuple[Any, ...], Any]] = [((), data)]
    while pending and len(found) < 10:
        path, value = pending.pop()
        if isinstance(value, str):
            if has_bad_chars(value):
                found.append(path)
        elif isinstance(value, dict):
            for key, item in value.items():
                if isinstance(key, str) and has_bad_chars(key):
                    found.append((*path, clean_text(key)))
                else:
                    pending.append(((*path, key), item))
        elif isinstance(value, list):
            pending.extend(((*path, i), item) for i, item in enumerate(value))
    return sorted(found, key=str)


async def refuse_bad_json(request: Request) -> None:
    """App-wide dependency: a JSON body with a control character or a lone surrogate in any key or string
    is answered 422, `fields` naming each place (FastAPI has parsed the body already; this reads its copy)."""
    from fastapi import params

    body_field = getattr(request.scope.get("route"), "body_field", None)
    if body_field is None or isinstance(body_field.field_info, params.Form):
        return
    try:
        data = await request.json()
    except (ValueError, RecursionError):
        return  # not JSON: FastAPI answers for it
    bad = _bad_json_fields(data)
    if bad:
        raise RequestValidationError([
            {"type": "string_bad_characters", "loc": ("body", *path), "msg": BAD_CHARS_MESSAGE, "input": None}
            for path in bad
        ])


async def refuse_bad_path(request: Request) -> None:
    """App-wide dependency: a path parameter with a bad character, or an integer id beyond what an id
    column holds, names nothing: 404 like any unknown address (not a 500 from the database)."""
    for value in request.path_params.values():
        if isinstance(value, str) and has_bad_chars(value):
            raise NotFound()
        if isinstance(value, int) and not 0 <= value <= INT32_MAX:
            raise NotFound()
