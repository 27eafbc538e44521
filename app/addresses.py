"""Email addresses and email domains as people type them, checked and normalised one way everywhere:
sign-in and invitations (accounts), organisations' domains, and the staff access rules (portal).

Pure functions, no database: every service may use them.
"""

from __future__ import annotations

import contextlib
import re

from app.errors import FormInvalid

_DOMAIN = re.compile(r"^(?=.{3,253}$)(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9-]{2,63}$")


def normalise_email(email: str) -> str:
    return email.strip().lower()


def validate_email(email: str) -> str:
    from email_validator import EmailNotValidError
    from email_validator import validate_email as _validate

    try:
        return normalise_email(_validate(email.strip(), check_deliverability=False).normalized)
    except EmailNotValidError:
        raise FormInvalid({"email": "Enter a valid email address, like name@example.com."}) from None


def normalise_domain(domain: str) -> str:
    return domain.strip().lower().lstrip("@").rstrip(".")


def parse_domains(text: str) -> list[str]:
    """Domains typed one per line or separated by commas (or spaces), normalised and without repeats.

    Raises FormInvalid naming the entries that are not domains.
    """
    seen: list[str] = []
    bad: list[str] = []
    for raw in re.split(r"[\s,;]+", text or ""):
        domain = normalise_domain(raw)
        if not domain:
            continue
        if "@" in domain:  # someone pasted an address: keep its domain
            domain = normalise_domain(domain.rsplit("@", 1)[1])
        with contextlib.suppress(UnicodeError):
            domain = domain.encode("idna").decode("ascii")
        if not _DOMAIN.match(domain):
            bad.append(raw.strip())
        elif domain not in seen:
            seen.append(domain)
    if bad:
        listed = ", ".join(f"“{b[:60]}”" for b in bad[:3])
        raise FormInvalid({"domains": f"Not an email domain: {listed}. Write domains like acme.com, "
                                      "one per line or separated by commas."})
    if len(seen) > 50:
        raise FormInvalid({"domains": "An organisation can have 50 domains at most."})
    return seen
