"""Checks that user text came out of a page as text, never as markup that runs."""

from __future__ import annotations

from html.parser import HTMLParser

_DANGEROUS_TAGS = {"script", "iframe", "svg", "object", "embed", "body"}  # <details> is ours; its ontoggle is not


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.problems: list[str] = []
        self._body_seen = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "script":
            # The page's own script is external and same-site; anything else is injected.
            src = dict(attrs).get("src") or ""
            if not src.startswith("/static/"):
                self.problems.append(f"<script {attrs}>")
            return
        if tag == "body":
            if self._body_seen:
                self.problems.append("a second <body>")
            self._body_seen = True
        elif tag in _DANGEROUS_TAGS:
            self.problems.append(f"<{tag}>")
        for name, value in attrs:
            if name.startswith("on"):
                self.problems.append(f"<{tag} {name}=…>")
            if name in ("href", "src", "action", "formaction") and value and \
                    value.strip().lower().replace("\x00", "").startswith(("javascript:", "data:text", "vbscript:")):
                self.problems.append(f"<{tag} {name}={value!r}>")


def assert_inert(html: str) -> None:
    parser = _Collector()
    parser.feed(html)
    assert parser.problems == [], parser.problems
