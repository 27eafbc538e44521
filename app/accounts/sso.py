"""Host-app SSO: a vendor signs its logged-in user straight in with a short-lived signed JWT.

The vendor's app redirects to /sso/jwt?token=…&next=/path. The token is signed with SSO_JWT_SECRET
(HS256) or with the private half of SSO_JWT_PUBLIC_KEY (RS256 for an RSA key, ES256 for a P-256 key).
Each key accepts exactly one algorithm, so neither `none` nor an HMAC "signed" with the public key
gets through. The token must carry `sub`, `email`, `jti` (single use) and an `exp` at most five
minutes ahead. The email is taken as verified: the vendor vouches for its own users, never for staff: a token
naming a PM's or an admin's address is refused (staff sign in by password or a provider mapped to staff).

When someone else is already signed in in the browser, the link does not replace their session: it shows
"You are signed in as X. Continue as Y?", and only that page's POST to /sso/jwt/confirm switches. Its form
carries the verified claims in a token signed with SECRET_KEY, valid 5 minutes, usable once, and only with
the session cookie the browser had when it was made.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import re
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from itsdangerous import BadSignature, URLSafeSerializer
from joserfc import jwt
from joserfc.errors import BadSignatureError, ClaimError, ExpiredTokenError, JoseError, MissingClaimError
from joserfc.jwk import ECKey, OctKey, RSAKey
from sqlalchemy.orm import Session

from app.accounts import service as accounts
from app.accounts.models import IdentityKind
from app.accounts.views import safe_next, signed_in_response, staff_account_refused
from app.addresses import validate_email
from app.config import Settings
from app.deps import DbSession, get_viewer
from app.errors import FormInvalid, NotFound
from app.forms import FormModel, read_form, text
from app.portal import service as portal
from app.security import session_cookie_value, verify_csrf
from app.web import render

router = APIRouter(include_in_schema=False, dependencies=[Depends(verify_csrf)])
log = logging.getLogger("ahead.sso")

MAX_LIFETIME_SECONDS = 300
LEEWAY_SECONDS = 30  # clock skew between the vendor's servers and ours
MIN_SECRET_BYTES = 32
MAX_TOKEN_LENGTH = 8192


class SsoConfigError(ValueError):
    """SSO_JWT_SECRET or SSO_JWT_PUBLIC_KEY cannot be used; raised at start-up."""


@dataclass(frozen=True, slots=True)
class SsoKeys:
    """The accepted algorithm of each configured key: algorithm -> key."""

    by_algorithm: dict[str, Any]

    @property
    def configured(self) -> bool:
        return bool(self.by_algorithm)


def load_keys(settings: Settings) -> SsoKeys:
    return _load_keys(settings.sso_jwt_secret, settings.sso_jwt_public_key)


@lru_cache(maxsize=4)
def _load_keys(secret: str, public_pem: str) -> SsoKeys:
    keys: dict[str, Any] = {}
    if secret:
        if len(secret.encode()) < MIN_SECRET_BYTES:
            raise SsoConfigError(f"SSO_JWT_SECRET must be at least {MIN_SECRET_BYTES} characters long "
                                 "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(48))'`)")
        keys["HS256"] = OctKey.import_key(secret)
    if public_pem.strip():
        from cryptography.hazmat.primitives.asymmetric import ec, rsa
        from cryptography.hazmat.primitives.serialization import load_pem_public_key

        # Environment variables often carry a PEM with its newlines written as "\n".
        pem = public_pem.strip().replace("\\n", "\n").encode()
        try:
            public = load_pem_public_key(pem)
        except (ValueError, TypeError) as exc:
            raise SsoConfigError("SSO_JWT_PUBLIC_KEY must be a PEM public key "
                                 "(-----BEGIN PUBLIC KEY----- …)") from exc
        if isinstance(public, rsa.RSAPublicKey):
            if public.key_size < 2048:
                raise SsoConfigError("SSO_JWT_PUBLIC_KEY: RSA keys must have at least 2048 bits")
            keys["RS256"] = RSAKey.import_key(pem)
        elif isinstance(public, ec.EllipticCurvePublicKey) and isinstance(public.curve, ec.SECP256R1):
            keys["ES256"] = ECKey.import_key(pem)
        else:
            raise SsoConfigError("SSO_JWT_PUBLIC_KEY must be an RSA key (RS256) or a P-256 EC key (ES256)")
    return SsoKeys(keys)


class SsoFailed(accounts.SignInFailed):
    """A host-app token that cannot sign anyone in. `reason` is for the log, `detail` for the person."""

    def __init__(self, detail: str, *, reason: str) -> None:
        super().__init__(detail)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class HostClaims:
    subject: str
    email: str
    name: str
    jti: str
    expires_at: datetime
    company: dict[str, Any] | None


def _header(token: str) -> dict[str, Any]:
    parts = token.split(".")
    if len(parts) != 3:
        raise ValueError("not a compact JWS")
    segment = parts[0] + "=" * (-len(parts[0]) % 4)
    header = json.loads(base64.urlsafe_b64decode(segment.encode("ascii")))
    if not isinstance(header, dict):
        raise TypeError("header is not an object")
    return header


def verify_token(token: str, *, keys: SsoKeys, product: str, now: float | None = None) -> HostClaims:
    """Check signature, algorithm and claims; raise SsoFailed with a message a person can act on."""
    again = f"Go back to {product} and try again."
    now = time.time() if now is None else now
    if not token or len(token) > MAX_TOKEN_LENGTH:
        raise SsoFailed(f"This sign-in link is incomplete. {again}", reason="no token or token too long")
    try:
        alg = _header(token).get("alg")
    except (ValueError, TypeError) as exc:
        raise SsoFailed(f"This sign-in link is damaged. {again}", reason=f"malformed header: {exc}") from None
    if not isinstance(alg, str) or (key := keys.by_algorithm.get(alg)) is None:
        raise SsoFailed(f"This sign-in link was not signed the way this portal expects. {again}",
                        reason=f"algorithm {alg!r} is not accepted (accepted: {sorted(keys.by_algorithm)})")
    try:
        claims = jwt.decode(token, key, algorithms=[alg]).claims
    except BadSignatureError:
        raise SsoFailed(f"This sign-in link was not signed by {product}'s key. {again}",
                        reason="bad signature") from None
    except (JoseError, ValueError) as exc:
        raise SsoFailed(f"This sign-in link is damaged. {again}", reason=f"undecodable: {exc}") from None

    registry = jwt.JWTClaimsRegistry(
        now=int(now), leeway=LEEWAY_SECONDS,
        exp={"essential": True}, sub={"essential": True}, jti={"essential": True},
    )
    try:
        registry.validate(claims)
    except ExpiredTokenError:
        raise SsoFailed(f"This sign-in link has expired (they last a few minutes). {again}",
                        reason="expired") from None
    except MissingClaimError as exc:
        raise SsoFailed(f"This sign-in link is missing information. {again}",
                        reason=f"missing claim(s): {exc.claim}") from None
    except ClaimError as exc:
        if exc.claim in ("nbf", "iat") and isinstance(claims.get(exc.claim), int | float):
            raise SsoFailed(f"This sign-in link is not valid yet. {again} If it keeps happening, the clocks of "
                            f"{product} and this portal disagree.", reason=f"not yet valid: {exc}") from None
        raise SsoFailed(f"This sign-in link is damaged. {again}", reason=f"invalid claim: {exc}") from None
    except JoseError as exc:
        raise SsoFailed(f"This sign-in link is damaged. {again}", reason=f"invalid claims: {exc}") from None

    exp = claims["exp"]
    if exp > now + MAX_LIFETIME_SECONDS + LEEWAY_SECONDS:
        raise SsoFailed(f"This sign-in link is valid for too long to be safe. {again} If it keeps happening, "
                        f"tell {product}'s support: sign-in tokens must expire within 5 minutes.",
                        reason=f"exp is {int(exp - now)} s ahead (at most {MAX_LIFETIME_SECONDS} s)")
    email = claims.get("email")
    if not isinstance(email, str) or not email.strip():
        raise SsoFailed(f"{product} did not tell us your email address, which this portal needs. {again}",
                        reason="no email claim")
    try:
        email = validate_email(email)
    except FormInvalid:
        raise SsoFailed(f"{product} sent an email address that is not valid. {again}",
                        reason="invalid email claim") from None
    subject, jti, name, company = claims["sub"], claims["jti"], claims.get("name") or "", claims.get("company")
    if not (0 < len(subject) <= 300) or not (0 < len(jti) <= 500) or not isinstance(name, str) \
            or not (company is None or isinstance(company, dict)):
        raise SsoFailed(f"This sign-in link is damaged. {again}", reason="sub, jti, name or company malformed")
    return HostClaims(subject=subject, email=email, name=name, jti=jti,
                      expires_at=datetime.fromtimestamp(exp + LEEWAY_SECONDS + 1, UTC), company=company)


@router.head("/sso/jwt", include_in_schema=False)
async def head_of_the_link(request: Request) -> Response:
    """A HEAD of the sign-in link: its GET spends the one-time token and signs in, so HeadMiddleware leaves a HEAD to
    the router and here it is refused, 405 `Allow: GET`, the token untouched; 404 where the link is not set up, as
    its GET answers."""
    if not load_keys(request.app.state.settings).configured:
        raise NotFound()
    return Response(status_code=405, headers={"Allow": "GET"})


@router.get("/sso/jwt")
async def sso_jwt(
    request: Request,
    session: DbSession,
    token: str = Query(default="", max_length=MAX_TOKEN_LENGTH),
    next: str = Query(default=""),  # one too long for any address is dropped (safe_next)
) -> Response:
    keys = load_keys(request.app.state.settings)
    if not keys.configured:
        raise NotFound()
    product = portal.get_branding(session).product_name or "the app you came from"
    try:
        claims = verify_token(token, keys=keys, product=product)
        # Hashed: a jti may be any string; the key stays short and cannot collide with other kinds.
        key = "sso:" + hashlib.sha256(claims.jti.encode()).hexdigest()
        if not accounts.use_token_id(session, key=key, expires_at=claims.expires_at):
            raise SsoFailed(f"This sign-in link was already used. Go back to {product} and try again.",
                            reason="replayed jti")
    except SsoFailed as exc:
        # Logged for the operator wiring up the host app; the page says what the person can do.
        log.info("host-app SSO refused: %s", exc.reason)
        raise
    next_url = safe_next(next, "/")
    viewer = await get_viewer(request)
    try:
        if viewer.user is not None:
            target = accounts.find_identity_account(session, claims=_identity_claims(claims))
            if target is None or target.id != viewer.user.id:
                # Someone else is signed in in this browser: switching silently would let a link from the host
                # app (opened in the wrong browser, or sent by someone) replace their session. Ask first.
                return render(request, "accounts/sso_switch.html", {
                    "current": viewer.user.email, "incoming": claims.email, "stay_url": next_url,
                    "switch": _switch_token(request, claims, next_url), "minutes": SWITCH_SECONDS // 60,
                }, headers={"Cache-Control": "no-store"})
        user = accounts.sign_in_identity(session, claims=_identity_claims(claims))
    except accounts.StaffAccountRefused as exc:
        return staff_account_refused(request, exc, method="host-app SSO", how=f"the sign-in from {product}")
    return signed_in_response(request, session, user=user, next_url=next_url)


class SwitchConfirm(FormModel):
    """The "continue as the other person" button: the signed switch token the confirmation page carries. One
    too long for any token this site signs is read as no token (the page then says it is damaged)."""

    switch: Annotated[str, text(4 * MAX_TOKEN_LENGTH)] = ""


@router.post("/sso/jwt/confirm")
async def sso_switch(request: Request, session: DbSession) -> Response:
    """The person confirmed switching from whoever was signed in to the account the host app vouched for."""
    product = portal.get_branding(session).product_name or "the app you came from"
    form = await read_form(request, SwitchConfirm)
    switch = form.data.switch if form.data is not None else ""
    try:
        claims, next_url = _read_switch_token(request, session, switch, product=product)
    except SsoFailed as exc:
        log.info("host-app SSO switch refused: %s", exc.reason)
        raise
    try:
        user = accounts.sign_in_identity(session, claims=_identity_claims(claims))
    except accounts.StaffAccountRefused as exc:
        return staff_account_refused(request, exc, method="host-app SSO", how=f"the sign-in from {product}")
    return signed_in_response(request, session, user=user, next_url=next_url,
                              flash=f"You are signed in as {user.email}.")


def _identity_claims(claims: HostClaims) -> accounts.IdentityClaims:
    return accounts.IdentityClaims(kind=IdentityKind.sso, issuer="sso", subject=claims.subject, email=claims.email,
                                   email_verified=True, name=claims.name, company=claims.company)


# --- switching accounts: the confirmation form's token ------------------------------------------------------

SWITCH_SECONDS = 300
_now = time.time  # replaced in tests


def _signer(request: Request) -> URLSafeSerializer:
    return URLSafeSerializer(request.app.state.settings.secret_key, salt="ahead.sso-switch")


def _browser(request: Request) -> str:
    """Who may use a switch token: the browser holding this session cookie (its hash: the token is in a page)."""
    cookie = session_cookie_value(request) or ""
    return hashlib.sha256(f"sso-switch:{cookie}".encode()).hexdigest() if cookie else ""


def _switch_token(request: Request, claims: HostClaims, next_url: str) -> str:
    """Signed, short-lived, single-use, bound to this browser's session; it carries the verified claims, so the
    POST needs no second token from the host app."""
    return _signer(request).dumps({
        "sub": claims.subject, "email": claims.email, "name": claims.name, "company": claims.company,
        "next": next_url, "id": secrets.token_urlsafe(16), "exp": int(_now()) + SWITCH_SECONDS,
        "browser": _browser(request),
    })


def _read_switch_token(request: Request, session: Session, token: str, *,
                       product: str) -> tuple[HostClaims, str]:
    again = f"Nothing was changed. To continue as the other person, go back to {product} and sign in again."
    try:
        data = _signer(request).loads(token)
    except BadSignature:
        raise SsoFailed(f"This confirmation is damaged. {again}", reason="switch token: bad signature") from None
    now = _now()
    if not isinstance(data, dict) or not isinstance(data.get("exp"), int) or data["exp"] < now:
        raise SsoFailed(f"This confirmation has expired (it lasts {SWITCH_SECONDS // 60} minutes). {again}",
                        reason="switch token: expired")
    browser = _browser(request)
    if not browser or not hmac.compare_digest(str(data.get("browser", "")), browser):
        raise SsoFailed(f"This confirmation was made for another browser, or you have signed in or out since. "
                        f"{again}", reason="switch token: another browser or session")
    expires_at = datetime.fromtimestamp(data["exp"] + 1, UTC)
    if not accounts.use_token_id(session, key="sso-switch:" + str(data.get("id", ""))[:64], expires_at=expires_at):
        raise SsoFailed(f"This confirmation was already used. {again}", reason="switch token: replayed")
    claims = HostClaims(subject=data["sub"], email=data["email"], name=data["name"], jti=data["id"],
                        expires_at=expires_at, company=data["company"])
    return claims, safe_next(data.get("next"), "/")


# --- keeping tokens out of the access log ------------------------------------------------------------

_SECRETS_IN_URLS = (
    (re.compile(r"([?&](?:token|access_token|id_token)=)[^&\s\"]*"), r"\1[redacted]"),
    # Magic links and staff invitations carry their token in the path.
    (re.compile(r"(/login/email/|/invitations/)(?!sent\b)[^/?\s\"]+"), r"\1[redacted]"),
    # Jira Cloud cannot sign a delivery: its tracker webhook's secret is the address's last segment.
    (re.compile(r"(/hooks/jira/[^/?\s\"]+/)[^/?\s\"]+"), r"\1[redacted]"),
)


def redact_url_secrets(text: str) -> str:
    for pattern, replacement in _SECRETS_IN_URLS:
        text = pattern.sub(replacement, text)
    return text


class RedactTokens:
    """logging filter for "uvicorn.access", whose records carry the full path and query as an argument."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(redact_url_secrets(a) if isinstance(a, str) else a for a in record.args)
        if isinstance(record.msg, str):
            record.msg = redact_url_secrets(record.msg)
        return True


def install_access_log_redaction() -> None:
    logger = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, RedactTokens) for f in logger.filters):
        logger.addFilter(RedactTokens())
