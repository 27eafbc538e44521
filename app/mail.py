"""Sending email: templates/email/<name>/{subject.txt,body.txt,body.html} through SMTP_URL.

Without SMTP_URL (development) the message is written to the log instead, so links in it can be
followed from the console.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any
from urllib.parse import unquote, urlsplit

from jinja2 import Environment

from app import logs
from app.config import Settings
from app.web import templates

log = logging.getLogger("ahead.mail")
log.setLevel(logging.INFO)

SMTP_TIMEOUT_SECONDS = 15

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


def build_message(settings: Settings, *, to: str, subject: str, text: str, html: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = settings.mail_from
    message["To"] = to
    message["Subject"] = subject
    message["Date"] = formatdate(localtime=False)
    message["Message-ID"] = make_msgid(domain=urlsplit(settings.base_url).hostname or "localhost")
    message.set_content(text)
    message.add_alternative(html, subtype="html")
    return message


async def send_email(settings: Settings, *, to: str, template: str, context: dict[str, Any]) -> bool:
    """Render and send one email. Returns True when handed to SMTP, False when only logged.

    Raises MailError when the SMTP server cannot be reached or refuses the message; callers decide
    what that means for the user (nothing they created should be lost because of it).
    """
    subject, text, html = render_email(template=template, context=context)
    if not settings.smtp_url:
        logs.configure()  # the message is the only copy of the link: it must reach the log
        log.info("Email not sent (SMTP_URL is not set)\nTo: %s\nSubject: %s\n\n%s", to, subject, text)
        return False

    import aiosmtplib

    target = parse_smtp_url(settings.smtp_url)
    message = build_message(settings, to=to, subject=subject, text=text, html=html)
    try:
        await aiosmtplib.send(
            message,
            hostname=target.host,
            port=target.port,
            use_tls=target.use_tls,
            username=target.username,
            password=target.password,
            timeout=SMTP_TIMEOUT_SECONDS,
        )
    except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
        log.warning("Email to %s (%s) could not be sent through %s:%s: %s", to, template, target.host,
                    target.port, exc)
        raise MailError(str(exc) or type(exc).__name__) from exc
    log.info("Email sent to %s: %s", to, subject)
    return True
