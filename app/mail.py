"""Email messages: rendered from templates/email/<name>/{subject.txt,body.txt,body.html}, sent through SMTP_URL
by the outbox (app/outbox/mailer.py).

Without SMTP_URL (development) the message is written to the log instead, so links in it can be
followed from the console.
"""

from __future__ import annotations

import logging
import quopri
import secrets
from dataclasses import dataclass
from email.header import Header
from email.message import EmailMessage
from email.utils import formataddr, formatdate, make_msgid, parseaddr
from functools import lru_cache
from typing import Any
from urllib.parse import unquote, urlsplit

from jinja2 import Environment

from app import logs
from app.config import Settings
from app.web import templates

log = logging.getLogger("ahead.mail")
log.setLevel(logging.INFO)

SMTP_TIMEOUT_SECONDS = 15  # connecting, and each command of a conversation

# The shared environment escapes everything; plain-text parts must not turn "&" into "&amp;".
_text_env: Environment = templates.env.overlay(autoescape=False)


class MailError(Exception):
    """The message could not be handed to the SMTP server."""


@dataclass(frozen=True, slots=True)
class SmtpTarget:
    host: str
    port: int
    use_tls: bool
    username: str | None
    password: str | None


def parse_smtp_url(url: str) -> SmtpTarget:
    """smtp://[user:pass@]host[:port] (STARTTLS when offered) or smtps://… (TLS from the start)."""
    parts = urlsplit(url)
    if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
        raise MailError("SMTP_URL must look like smtp://host:port or smtps://user:password@host:port")
    use_tls = parts.scheme == "smtps"
    return SmtpTarget(
        host=parts.hostname,
        port=parts.port or (465 if use_tls else 25),
        use_tls=use_tls,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
    )


def render_email(*, template: str, context: dict[str, Any]) -> tuple[str, str, str]:
    """Subject (one line), text body and HTML body of templates/email/<template>/."""
    subject = _text_env.get_template(f"email/{template}/subject.txt").render(context)
    subject = " ".join(subject.split())
    text = _text_env.get_template(f"email/{template}/body.txt").render(context)
    html = templates.env.get_template(f"email/{template}/body.html").render(context)
    return subject, text, html


def mail_domain(settings: Settings) -> str:
    """The domain of the Message-IDs this server makes (BASE_URL's host)."""
    return urlsplit(settings.base_url).hostname or "localhost"


def build_message(settings: Settings, *, to: str, subject: str, text: str, html: str, message_id: str | None = None,
                  headers: dict[str, str] | None = None) -> EmailMessage:
    message = EmailMessage()
    message["From"] = settings.mail_from
    message["To"] = to
    message["Subject"] = subject
    message["Date"] = formatdate(localtime=False)
    message["Message-ID"] = message_id or make_msgid(domain=mail_domain(settings))
    for name, value in (headers or {}).items():
        if name.lower() in _OWN_HEADERS:
            continue
        message[name] = value
    message.set_content(text)
    message.add_alternative(html, subtype="html")
    return message


# Headers the message gets from the outbox itself; a job's own headers cannot replace them.
_OWN_HEADERS = frozenset({"from", "to", "subject", "date", "message-id", "content-type", "mime-version",
                          "content-transfer-encoding", "bcc", "cc", "sender", "reply-to"})


def build_raw(settings: Settings, *, to: str, subject: str, text: str, html: str, message_id: str,
              headers: dict[str, str] | None = None) -> bytes:
    """The same message as `build_message`, as the bytes SMTP sends, written directly: building an EmailMessage
    and flattening it costs about 3.5 ms of CPU per message, which alone would hold a worker under 300 emails
    a second. Both parts are UTF-8 in quoted-printable; headers with other than ASCII are RFC 2047 encoded."""
    boundary = f"=_ahead_{secrets.token_hex(12)}"
    lines = [
        _header("From", sender_header(settings.mail_from)),
        _header("To", to),
        _header("Subject", subject),
        _header("Date", formatdate(localtime=False)),
        _header("Message-ID", message_id),
        "MIME-Version: 1.0",
        *(_header(key, value) for key, value in (headers or {}).items() if key.lower() not in _OWN_HEADERS),
        f'Content-Type: multipart/alternative; boundary="{boundary}"',
        "",
        f"--{boundary}",
        'Content-Type: text/plain; charset="utf-8"',
        "Content-Transfer-Encoding: quoted-printable",
        "",
        _quoted_printable(text),
        f"--{boundary}",
        'Content-Type: text/html; charset="utf-8"',
        "Content-Transfer-Encoding: quoted-printable",
        "",
        _quoted_printable(html),
        f"--{boundary}--",
        "",
    ]
    return "\r\n".join(lines).encode("ascii")


@lru_cache(maxsize=8)
def sender_header(mail_from: str) -> str:
    """MAIL_FROM as the From header's value: parsed once, not once per message."""
    return formataddr(parseaddr(mail_from), charset="utf-8")


@lru_cache(maxsize=8)
def sender_address(mail_from: str) -> str:
    """MAIL_FROM's bare address, for the SMTP envelope."""
    return parseaddr(mail_from)[1]


def _header(name: str, value: str) -> str:
    """One header, folded, RFC 2047 encoded when it is not ASCII; no line breaks of the value's own (a
    header value cannot add a header)."""
    value = " ".join(value.replace("\r", " ").replace("\n", " ").split())
    if value.isascii() and len(name) + len(value) + 2 <= 78:
        return f"{name}: {value}"
    charset = "us-ascii" if value.isascii() else "utf-8"
    return f"{name}: " + Header(value, charset, header_name=name).encode(linesep="\r\n")


def _quoted_printable(text: str) -> str:
    lines = text.replace("\r\n", "\n").split("\n")
    return "\r\n".join(quopri.encodestring(line.encode()).decode("ascii").replace("\n", "\r\n")
                        for line in lines)


def log_instead(to: str, subject: str, text: str) -> None:
    """Development without SMTP_URL: the message goes to the log (its links can be followed from there)."""
    logs.configure()  # the message is the only copy of the link: it must reach the log
    log.info("Email not sent (SMTP_URL is not set)\nTo: %s\nSubject: %s\n\n%s", to, subject, text)
