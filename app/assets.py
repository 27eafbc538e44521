"""Static files under content-hashed names, kept in memory with their compressed forms.

Templates name a file through `static_url("app.css")`, which gives `/static/app.3f2a9c1b0d4e.css`: the name
changes whenever the file does, so browsers and CDNs may keep it for a year without asking again
(`Cache-Control: public, max-age=31536000, immutable`), and a release is never shown with the previous
release's stylesheet. The plain name (`/static/app.css`, in bookmarks, old pages, other sites) and a hashed
name this process does not know (a page from another release during a rolling upgrade) still answer the
current file, kept for a short time only.

Files are read once per process (in development again when they change on disk) and compressed (brotli,
gzip) on first request; only names found in the folder are served, so no path reaches the file system.
"""

from __future__ import annotations

import hashlib
import mimetypes
import re
from dataclasses import dataclass, field
from pathlib import Path

from starlette.exceptions import HTTPException
from starlette.types import Receive, Scope, Send

from app.config import ROOT
from app.responses import chosen_coding, compress, none_match, request_header

IMMUTABLE = "public, max-age=31536000, immutable"
SHORT = "public, max-age=300"  # a plain or unknown name: the file may change with the next release
PREFIX = "/static/"
# Compressed once per process, so the smallest output is worth its time (brotli 11: ~0.1 s for app.css).
LEVELS = {"br": 11, "gzip": 9}
COMPRESSIBLE = ("text/", "application/javascript", "application/json", "image/svg+xml")
_HASHED = re.compile(r"^(?P<stem>.+)\.(?P<hash>[0-9a-f]{12})(?P<suffix>\.[^./]+)$")


def _hashed_name(name: str, digest: str) -> str:
    stem, dot, suffix = name.rpartition(".")
    return f"{stem}.{digest}.{suffix}" if dot and "/" not in suffix else f"{name}.{digest}"


@dataclass(slots=True)
class Asset:
    """One file of the folder: its bytes, its hashed name and the compressed forms made so far."""

    name: str
    body: bytes
    mtime_ns: int
    digest: str = ""
    hashed: str = ""
    media_type: str = "application/octet-stream"
    encoded: dict[str, bytes] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.digest = hashlib.sha256(self.body).hexdigest()[:12]
        self.hashed = _hashed_name(self.name, self.digest)
        guessed, _ = mimetypes.guess_type(self.name)
        self.media_type = guessed or "application/octet-stream"
        if self.media_type.startswith("text/") or self.media_type == "application/javascript":
            self.media_type += "; charset=utf-8"

    @property
    def compressible(self) -> bool:
        return self.media_type.startswith(COMPRESSIBLE) and len(self.body) >= 1024

    def body_in(self, coding: str | None) -> tuple[bytes, str | None]:
        """The bytes to send for the client's coding, and the coding actually used (None: as is)."""
        if coding is None or not self.compressible:
            return self.body, None
        encoded = self.encoded.get(coding)
        if encoded is None:
            encoded = self.encoded[coding] = compress(self.body, coding, LEVELS[coding])
        return encoded, coding


class Assets:
    """The static folder as an ASGI app (mounted at /static) and the `static_url` of its files."""

    def __init__(self, directory: Path, *, watch: bool = False) -> None:
        self.directory = directory
        self.watch = watch  # development: a file changed on disk is read again (and gets a new name)
        self._by_name: dict[str, Asset] = {}
        self._by_hashed: dict[str, Asset] = {}
        self._loaded = False

    def _load(self) -> None:
        self._by_name.clear()
        self._by_hashed.clear()
        for path in sorted(self.directory.rglob("*")):
            name = path.relative_to(self.directory).as_posix()
            if path.is_file() and not any(part.startswith(".") for part in name.split("/")):
                self._add(Asset(name=name, body=path.read_bytes(), mtime_ns=path.stat().st_mtime_ns))
        self._loaded = True

    def _add(self, asset: Asset) -> None:
        old = self._by_name.get(asset.name)
        if old is not None:
            self._by_hashed.pop(old.hashed, None)
        self._by_name[asset.name] = asset
        self._by_hashed[asset.hashed] = asset

    def _fresh(self, asset: Asset) -> Asset:
        if not self.watch:
            return asset
        path = self.directory / asset.name
        try:
            mtime = path.stat().st_mtime_ns
        except FileNotFoundError:
            return asset
        if mtime != asset.mtime_ns:
            asset = Asset(name=asset.name, body=path.read_bytes(), mtime_ns=mtime)
            self._add(asset)
        return asset

    def get(self, name: str) -> Asset | None:
        if not self._loaded:
            self._load()
        asset = self._by_name.get(name)
        if asset is None and self.watch:
            self._load()  # a file added while developing
            asset = self._by_name.get(name)
        return self._fresh(asset) if asset is not None else None

    def url(self, name: str) -> str:
        """The address of a static file under its content-hashed name (a name not in the folder is an error,
        so a typo in a template fails its page's tests instead of a browser's request)."""
        asset = self.get(name)
        if asset is None:
            raise LookupError(f"no static file {name!r} in {self.directory}")
        return PREFIX + asset.hashed

    def find(self, requested: str) -> tuple[Asset, bool] | None:
        """The file an address names, and whether the address is its current hashed name (kept a year)."""
        if not self._loaded:
            self._load()
        asset = self._by_hashed.get(requested)
        if asset is not None:
            fresh = self._fresh(asset)
            return fresh, fresh is asset
        asset = self.get(requested)
        if asset is None:
            match = _HASHED.match(requested)
            asset = self.get(f"{match['stem']}{match['suffix']}") if match else None
        return (asset, False) if asset is not None else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] not in ("GET", "HEAD"):
            raise HTTPException(405, headers={"Allow": "GET, HEAD"})
        path: str = scope["path"]
        requested = path[path.find(PREFIX) + len(PREFIX):] if PREFIX in path else ""
        found = self.find(requested)
        if found is None:
            raise HTTPException(404)
        asset, immutable = found
        etag = f'W/"{asset.digest}"'  # weak: one tag for the file in every coding
        headers = [(b"cache-control", (IMMUTABLE if immutable else SHORT).encode()), (b"etag", etag.encode())]
        if asset.compressible:
            headers.append((b"vary", b"Accept-Encoding"))
        if none_match(request_header(scope, b"if-none-match"), etag):
            await send({"type": "http.response.start", "status": 304, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return
        body, coding = asset.body_in(chosen_coding(request_header(scope, b"accept-encoding")))
        headers += [(b"content-type", asset.media_type.encode()), (b"content-length", str(len(body)).encode())]
        if coding is not None:
            headers.append((b"content-encoding", coding.encode()))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})


static = Assets(ROOT / "static")
