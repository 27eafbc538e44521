"""OpenID Connect sign-in through Authlib: discovery, authorization code + PKCE, ID token checks.

What Authlib (1.9) checks for us in `authorize_access_token`: the state (against the one kept in the
browser's `ahead_oidc` session cookie, cleared once used), the ID token's signature (against the
provider's JWKS, algorithms limited to those its discovery document lists), `exp`/`iat`/`nbf` with a
leeway, the nonce, `azp`, and `at_hash`. What it does not, and this module adds:

* `aud` must contain our client id: Authlib only checks `azp`, so a token for another client that
  names us as authorised party would pass; we pass an explicit `aud` rule.
* `iss` must be the issuer the admin configured, not merely what the discovery document says, and
  the discovery document's own `issuer` must match it (OpenID Connect Discovery §4.3).
* the `iss` authorization-response parameter (RFC 9207), when the provider sends it.
* an ID token must be present at all: without one Authlib skips every check above.
* `openid` is always requested, so there always is an ID token and a nonce.
"""

from __future__ import annotations

import logging
import ssl
import time
from functools import lru_cache
from typing import Any
from urllib.parse import quote

import httpx2 as _http  # the HTTP library Authlib's client uses (a dependency: see pyproject.toml)
from authlib.integrations.base_client import MismatchingStateError, OAuthError
from authlib.integrations.starlette_client import OAuth
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from joserfc.errors import JoseError
from starlette.middleware.sessions import SessionMiddleware

from app.accounts import service as accounts
from app.accounts.models import IdentityKind
from app.accounts.views import safe_next, signed_in_response, staff_account_refused
from app.config import OidcProvider
from app.deps import DbSession
from app.errors import NotFound
from app.portal import service as portal
from app.security import verify_csrf
from app.web import render

log = logging.getLogger("ahead.oidc")

class OidcStateMiddleware:
    """Starlette's SessionMiddleware, which keeps Authlib's state, nonce and PKCE verifier in a signed cookie between
    /auth/{name}/start and the callback, for the sign-in's own paths only (`prefix`): everywhere else it parsed every
    request's cookies and wrapped every answer for a cookie no other route reads (a vote paid for it too). The
    cookie is not refreshed by pages visited meanwhile: it lasts its 10 minutes from the sign-in's start."""

    def __init__(self, app: Any, *, prefix: str, secret_key: str, session_cookie: str, max_age: int, path: str,
                 https_only: bool) -> None:
        self.app = app
        self.prefix = prefix
        self.with_state = SessionMiddleware(app, secret_key=secret_key, session_cookie=session_cookie, max_age=max_age,
                                            path=path, same_site="lax", https_only=https_only)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].startswith(self.prefix):
            await self.with_state(scope, receive, send)
        else:
            await self.app(scope, receive, send)


router = APIRouter(include_in_schema=False, dependencies=[Depends(verify_csrf)])

# Clock skew accepted on exp / iat / nbf.
LEEWAY_SECONDS = 60
# Discovery (and the keys) are fetched again after this long, so rotated keys and endpoints are seen.
METADATA_SECONDS = 3600
HTTP_TIMEOUT_SECONDS = 10.0


class _Failure(Exception):
    """A sign-in that stopped; rendered as a page that says what to do. The transaction is rolled back."""

    def __init__(self, status: int, title: str, detail: str) -> None:
        super().__init__(title)
        self.status, self.title, self.detail = status, title, detail


def _provider(request: Request, name: str) -> OidcProvider:
    providers: list[OidcProvider] = request.app.state.settings.providers
    for provider in providers:
        if provider.name == name:
            return provider
    raise NotFound()


def _scope(provider: OidcProvider) -> str:
    scopes = provider.scopes.split()
    return " ".join(scopes if "openid" in scopes else ["openid", *scopes])


def _client(request: Request, provider: OidcProvider) -> Any:
    """The app's Authlib client for this provider, registered on first use."""
    registry: OAuth | None = getattr(request.app.state, "oidc", None)
    if registry is None:
        registry = request.app.state.oidc = OAuth()
    client = registry.create_client(provider.name)
    if client is None:
        client = registry.register(
            provider.name,
            client_id=provider.client_id,
            client_secret=provider.client_secret or None,
            server_metadata_url=provider.issuer.rstrip("/") + "/.well-known/openid-configuration",
            client_kwargs={"scope": _scope(provider), "code_challenge_method": "S256",
                           "timeout": HTTP_TIMEOUT_SECONDS, "verify": _tls()},
        )
    loaded_at = client.server_metadata.get("_loaded_at")
    if loaded_at is not None and time.time() - loaded_at > METADATA_SECONDS:
        _forget_metadata(client)
    return client


@lru_cache(maxsize=1)
def _tls() -> ssl.SSLContext:
    """One TLS context for every provider call: Authlib opens a new HTTP client per call, and building
    a context (loading the CA bundle) each time costs more than the call itself."""
    import certifi

    return ssl.create_default_context(cafile=certifi.where())


def _forget_metadata(client: Any) -> None:
    client.server_metadata.pop("_loaded_at", None)
    client.server_metadata.pop("jwks", None)


def _same_issuer(a: str, b: str) -> bool:
    return a.rstrip("/") == b.rstrip("/")


async def _metadata(client: Any, provider: OidcProvider) -> dict[str, Any]:
    """The discovery document, checked to belong to the configured issuer."""
    try:
        metadata: dict[str, Any] = await client.load_server_metadata()
    except (_http.HTTPError, OSError, ValueError) as exc:
        log.warning("OIDC %s: discovery at %s failed: %s", provider.name, provider.issuer, exc)
        raise _unavailable(provider) from None
    if not _same_issuer(str(metadata.get("issuer", "")), provider.issuer):
        _forget_metadata(client)
        log.error("OIDC %s: discovery names issuer %r, but OIDC_PROVIDERS says %r", provider.name,
                  metadata.get("issuer"), provider.issuer)
        raise _Failure(502, f"{provider.label} is not set up correctly",
                       f"The portal cannot use {provider.label} until its settings are corrected. "
                       "Please tell the portal's administrator, and sign in another way meanwhile.")
    return metadata


def _unavailable(provider: OidcProvider) -> _Failure:
    return _Failure(502, f"{provider.label} is not answering",
                    f"We could not reach {provider.label} to sign you in. Nothing was changed. "
                    "Try again in a few minutes, or sign in another way.")


def _callback_url(request: Request, provider: OidcProvider) -> str:
    # BASE_URL, not the request's own host: the address the admin registered, also behind a proxy.
    return f"{request.app.state.settings.base_url}/auth/{provider.name}/callback"


def _next_key(provider: OidcProvider) -> str:
    return f"next_{provider.name}"


def _failure_page(request: Request, provider: OidcProvider, failure: _Failure, next_url: str) -> Response:
    return render(request, "accounts/oidc_error.html", {
        "status": failure.status, "title": failure.title, "detail": failure.detail, "provider": provider,
        "retry_url": f"/auth/{provider.name}/start" + (f"?next={quote(next_url)}" if next_url else ""),
        "login_url": "/login" + (f"?next={quote(next_url)}" if next_url else ""),
    }, status_code=failure.status)


@router.head("/auth/{name}/start", include_in_schema=False)
@router.head("/auth/{name}/callback", include_in_schema=False)
async def head_of_a_step(request: Request, name: str) -> Response:
    """A HEAD of a sign-in step. The GETs act (the start writes the sign-in's state, the callback spends a one-time code
    and opens a session), so HeadMiddleware leaves a HEAD of them to the router, and here it is refused, 405 `Allow: GET`,
    nothing read or written; for a provider this portal does not have, 404, as its GET answers."""
    _provider(request, name)
    return Response(status_code=405, headers={"Allow": "GET"})


@router.get("/auth/{name}/start")
async def start(request: Request, name: str, next: str | None = None) -> Response:
    """Send the browser to the provider; state, nonce and the PKCE verifier stay in the `ahead_oidc` cookie."""
    provider = _provider(request, name)
    next_url = safe_next(next, "")
    client = _client(request, provider)
    try:
        await _metadata(client, provider)
        response: Response = await client.authorize_redirect(request, _callback_url(request, provider))
    except _Failure as failure:
        return _failure_page(request, provider, failure, next_url)
    request.session[_next_key(provider)] = next_url
    return response


@router.get("/auth/{name}/callback")
async def callback(request: Request, session: DbSession, name: str) -> Response:
    provider = _provider(request, name)
    next_url = safe_next(request.session.pop(_next_key(provider), ""), "")
    client = _client(request, provider)
    try:
        claims = await _verified_claims(request, client, provider)
        access = portal.get_access(session)
        user = accounts.sign_in_identity(session, claims=_identity(claims, provider, access.groups_claim),
                                         access=access)
    except _Failure as failure:
        return _failure_page(request, provider, failure, next_url)
    except accounts.StaffAccountRefused as exc:
        return staff_account_refused(request, exc, method=f"OIDC {provider.name}", how=provider.label)
    except accounts.SignInFailed as exc:
        log.info("OIDC %s: sign-in refused: %s", provider.name, exc.detail)
        return _failure_page(request, provider, _Failure(exc.status_code, exc.title, exc.detail), next_url)
    return signed_in_response(request, session, user=user,
                              next_url=next_url or ("/admin" if user.is_staff else "/"),
                              flash=f"You are signed in as {user.email}.")


async def _verified_claims(request: Request, client: Any, provider: OidcProvider) -> dict[str, Any]:
    """The ID token's claims, once the response and the token have passed every check."""
    params = request.query_params
    state = params.get("state") or ""
    if params.get("error"):
        await client.framework.clear_state_data(request.session, state)
        error = params["error"]
        log.info("OIDC %s: the provider answered error=%s", provider.name, error[:100])
        if error in ("access_denied", "login_required", "consent_required", "interaction_required"):
            raise _Failure(400, "Sign-in cancelled",
                           f"{provider.label} did not sign you in: it was cancelled or not allowed. "
                           "Nothing was changed. Try again, or sign in another way.")
        raise _Failure(400, f"{provider.label} could not sign you in",
                       f"{provider.label} reported a problem. Nothing was changed. Try again, or sign in "
                       "another way; if it keeps happening, tell the portal's administrator.")
    expired = _Failure(400, "This sign-in has expired",
                       "The sign-in did not start in this browser, took longer than 10 minutes, or was "
                       "already used. Nothing was changed. Please start again.")
    if not state or not params.get("code"):
        raise expired
    metadata = await _metadata(client, provider)
    returned_issuer = params.get("iss")
    if returned_issuer is not None and not _same_issuer(returned_issuer, provider.issuer):
        # RFC 9207: an answer from another provider must not make us send it our code.
        await client.framework.clear_state_data(request.session, state)
        log.warning("OIDC %s: authorization response from issuer %r", provider.name, returned_issuer)
        raise _Failure(400, "We could not verify this sign-in",
                       "The answer did not come from the sign-in service it was sent to. Nothing was "
                       "changed. Please start again.")
    try:
        token = await client.authorize_access_token(
            request, leeway=LEEWAY_SECONDS,
            claims_options={
                "iss": {"essential": True, "value": str(metadata["issuer"])},
                "aud": {"essential": True, "value": provider.client_id},
            },
        )
    except MismatchingStateError:
        log.warning("OIDC %s: callback with an unknown or used state", provider.name)
        raise expired from None
    except OAuthError as exc:
        # The token endpoint said no: a code used twice, expired, or a PKCE verifier that does not match.
        log.warning("OIDC %s: token request refused: %s", provider.name, exc.error)
        raise _Failure(400, f"{provider.label} refused this sign-in",
                       "The sign-in could not be completed (it may have been used already, or taken too "
                       "long). Nothing was changed. Please start again.") from None
    except JoseError as exc:
        log.warning("OIDC %s: ID token rejected: %s: %s", provider.name, type(exc).__name__, exc)
        raise _rejected(provider) from None
    except (_http.HTTPError, OSError) as exc:
        log.warning("OIDC %s: token request failed: %s", provider.name, exc)
        raise _unavailable(provider) from None
    claims = token.get("userinfo")
    if "id_token" not in token or not claims:
        log.warning("OIDC %s: the token response carried no ID token", provider.name)
        raise _rejected(provider)
    return dict(claims)


def _rejected(provider: OidcProvider) -> _Failure:
    return _Failure(400, "We could not verify this sign-in",
                    f"The answer from {provider.label} did not pass our security checks (it may have "
                    "expired, or been meant for another site). Nothing was changed. Please start again.")


def _identity(claims: dict[str, Any], provider: OidcProvider, groups_claim: str) -> accounts.IdentityClaims:
    groups = claims.get(groups_claim) or ()
    if isinstance(groups, str):
        groups = groups.split()
    verified = claims.get("email_verified")
    return accounts.IdentityClaims(
        kind=IdentityKind.oidc,
        issuer=str(claims["iss"]),
        subject=str(claims.get("sub") or ""),
        email=str(claims.get("email") or ""),
        email_verified=verified is True or str(verified).lower() == "true",
        name=str(claims.get("name") or ""),
        groups=tuple(str(g) for g in groups if isinstance(g, (str, int))),
    )

