"""Email over SMTP for the outbox: one connection kept open across a batch, and the "email" job's handler.

A batch's messages go over one SMTP connection (`Mailer`, opened at the first message, closed at the end of
the batch). When the server cannot be reached, the rest of the batch's email is put back at once with the
same reason instead of each message waiting for its own timeout.

How an SMTP answer ends an attempt: 2xx done (the server's answer is kept with the job); a 5xx for the
recipient `Failed` (it would be refused again); anything else (4xx, a 5xx to the sender or the message, a
timeout, a connection that fails) `Retry` by the email schedule (registry.EMAIL_SCHEDULE): the message waits
until the server is back or put right, then goes out.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any
from urllib.parse import quote, urlsplit

import aiosmtplib

from app import mail
from app.config import Settings
from app.outbox import service
from app.outbox.registry import Failed, Job, Retry

log = logging.getLogger("ahead.outbox")


@dataclass(frozen=True, slots=True)
class Sent:
    answer: str  # the server's answer ("250 OK …"), or what happened instead ("logged: SMTP_URL is not set")


@dataclass(frozen=True, slots=True)
class SmtpSummary:
    """The SMTP settings in force, for the admin page: the password never leaves the server."""

    configured: bool
    url: str  # SMTP_URL with its password masked
    host: str
    port: int
    security: str
    username: str
    problem: str  # why SMTP_URL cannot be used, when it cannot


def smtp_summary(settings: Settings) -> SmtpSummary:
    url = settings.smtp_url
    if not url:
        return SmtpSummary(False, "", "", 0, "", "", "")
    try:
        target = mail.parse_smtp_url(url)
    except mail.MailError as exc:
        return SmtpSummary(True, "(not shown: it cannot be read)", "", 0, "", "", str(exc))
    parts = urlsplit(url)
    credentials = ""
    if target.username:
        credentials = quote(target.username, safe="") + (":••••••••" if target.password else "") + "@"
    host = f"[{target.host}]" if ":" in target.host else target.host
    masked = f"{parts.scheme}://{credentials}{host}:{target.port}"
    security = ("TLS from the start (smtps)" if target.use_tls
                else "STARTTLS when the server offers it, plain otherwise (smtp)")
    return SmtpSummary(True, masked, target.host, target.port, security, target.username or "", "")


def smtp_answer(exc: BaseException) -> str:
    """An SMTP error as the server said it: code and text when there is one."""
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused) and exc.recipients:
        return "; ".join(smtp_answer(r) for r in exc.recipients)
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return f"{exc.code} {exc.message}".strip()
    return str(exc) or type(exc).__name__


def _permanent(exc: BaseException) -> bool:
    """Whether the server refused this message for good: only a 5xx for its recipient (no such mailbox, say).
    Any other refusal, 5xx included (relay denied, a server that answers every command with an error), is
    taken as the server's problem: the message waits and goes out when the server is put right."""
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        return bool(exc.recipients) and all(500 <= r.code < 600 for r in exc.recipients)
    return isinstance(exc, aiosmtplib.SMTPRecipientRefused) and 500 <= exc.code < 600


class Mailer:
    """The SMTP side of one batch: a connection opened when first needed and reused until `close`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._client: aiosmtplib.SMTP | None = None
        self._unreachable: str | None = None  # why the server could not be reached in this batch
        self._where_text: str | None = None

    async def _connect(self) -> aiosmtplib.SMTP:
        target = mail.parse_smtp_url(self.settings.smtp_url)
        client = aiosmtplib.SMTP(hostname=target.host, port=target.port, use_tls=target.use_tls,
                                 username=target.username, password=target.password,
                                 timeout=mail.SMTP_TIMEOUT_SECONDS)
        await client.connect()
        return client

    async def send(self, message: EmailMessage | bytes, *, sender: str = "", to: str = "",
                   before_accept: Callable[[], Awaitable[None]] | None = None) -> str:
        """Hand `message` to the server (bytes: from `sender` to `to`); its answer. Raises Retry or Failed with
        the server's words.

        `before_accept` is awaited after the envelope (MAIL, RCPT) is through and before the message itself
        goes: the worker records the previous message meanwhile, so the two overlap, and still at most one
        message is ever accepted by the server and not yet recorded as sent."""
        where = self._where()
        if self._unreachable is not None:
            raise Retry(self._unreachable)
        if self._client is None or not self._client.is_connected:
            try:
                self._client = await self._connect()
            except (aiosmtplib.SMTPException, OSError, TimeoutError, mail.MailError) as exc:
                self._unreachable = f"SMTP server {where} could not be reached: {smtp_answer(exc)}"
                if isinstance(exc, mail.MailError | aiosmtplib.SMTPAuthenticationError):
                    self._unreachable = f"SMTP server {where} refused us: {smtp_answer(exc)}"
                raise Retry(self._unreachable) from exc
        client = self._client
        try:
            if isinstance(message, bytes):
                await client.mail(sender)
                await client.rcpt(to)
                if before_accept is not None:
                    await before_accept()
                response = await client.data(message)
                answer = f"{response.code} {response.message}"
            else:
                if before_accept is not None:
                    await before_accept()
                _errors, text = await client.send_message(message)
                answer = f"250 {text}"  # aiosmtplib gives the text of the DATA answer; accepted means 250
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            if isinstance(exc, aiosmtplib.SMTPResponseException) and not isinstance(
                    exc, aiosmtplib.SMTPServerDisconnected | aiosmtplib.SMTPTimeoutError):
                try:
                    await client.rset()  # the connection goes on with the next message
                except (aiosmtplib.SMTPException, OSError, TimeoutError):
                    self._client = None
                    await _quietly_close(client)
            else:
                self._client = None
                await _quietly_close(client)
            if _permanent(exc):
                raise Failed(f"refused by {where}: {smtp_answer(exc)}") from exc
            raise Retry(f"not accepted by {where}: {smtp_answer(exc)}") from exc
        return answer

    def _where(self) -> str:
        """host:port, for messages; read once per batch, not once per message."""
        if self._where_text is None:
            self._where_text = self._read_where()
        return self._where_text

    def _read_where(self) -> str:
        try:
            target = mail.parse_smtp_url(self.settings.smtp_url)
        except mail.MailError:
            return "(SMTP_URL unusable)"
        return f"{target.host}:{target.port}"

    async def close(self) -> None:
        client, self._client = self._client, None
        self._unreachable = None
        if client is not None:
            try:
                await client.quit()
            except (aiosmtplib.SMTPException, OSError, TimeoutError):
                await _quietly_close(client)


async def _quietly_close(client: aiosmtplib.SMTP | None) -> None:
    if client is not None:
        with contextlib.suppress(Exception):  # closing a connection that already broke
            client.close()


@dataclass(frozen=True, slots=True)
class Rendered:
    to: str
    subject: str
    text: str
    message_id: str
    message: EmailMessage | bytes  # bytes for ASCII addresses (the fast way); an EmailMessage otherwise (SMTPUTF8)


def message_for(settings: Settings, job: Job) -> Rendered:
    """The email job's message, rendered now."""
    payload: dict[str, Any] = job.payload
    to = payload["to"]
    subject, text, html = mail.render_email(template=payload["template"], context=payload.get("context") or {})
    message_id = service.message_id(job.key, mail.mail_domain(settings))
    headers = payload.get("headers") or {}
    message: EmailMessage | bytes
    if to.isascii():
        message = mail.build_raw(settings, to=to, subject=subject, text=text, html=html, message_id=message_id,
                                 headers=headers)
    else:
        message = mail.build_message(settings, to=to, subject=subject, text=text, html=html, message_id=message_id,
                                     headers=headers)
    return Rendered(to, subject, text, message_id, message)


async def deliver(settings: Settings, mailer: Mailer, job: Job,
                  before_accept: Callable[[], Awaitable[None]] | None = None) -> str:
    """Send an email job; the outcome to keep with it. Raises Retry or Failed. `before_accept`: Mailer.send."""
    try:
        rendered = message_for(settings, job)
    except Exception as exc:  # a template that no longer exists, a context it cannot render
        raise Failed(f"could not be rendered: {type(exc).__name__}: {exc}") from exc
    if not settings.smtp_url:
        if before_accept is not None:
            await before_accept()
        mail.log_instead(rendered.to, rendered.subject, rendered.text)
        return "logged: SMTP_URL is not set"
    answer = await mailer.send(rendered.message, sender=mail.sender_address(settings.mail_from), to=rendered.to,
                               before_accept=before_accept)
    log.info("Email sent to %s (%s, %s): %s", rendered.to, job.payload.get("template"), rendered.message_id, answer)
    return answer


async def send_test(settings: Settings, *, to: str) -> tuple[bool, str]:
    """The admin page's test email, sent now (not queued): whether the server accepted it, and its exact
    answer or the error."""
    if not settings.smtp_url:
        return False, "SMTP_URL is not set: email is written to the log instead of being sent."
    subject, text, html = mail.render_email(template="test", context={"base_url": settings.base_url})
    message = mail.build_message(settings, to=to, subject=subject, text=text, html=html)
    mailer = Mailer(settings)
    try:
        answer = await mailer.send(message)
    except (Retry, Failed) as exc:
        log.warning("Test email to %s not sent: %s", to, exc)
        return False, str(exc)
    finally:
        await mailer.close()
    log.info("Test email sent to %s: %s", to, answer)
    return True, answer
