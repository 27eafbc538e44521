"""Run-time portal settings kept in the database: branding, private-portal mode, staff role mapping."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Annotated, Any, TypeVar, cast

from pydantic import AfterValidator
from sqlalchemy import select
from sqlalchemy.orm import Session

from app import revision
from app.accounts.viewer import Viewer
from app.addresses import parse_domains, validate_email
from app.audit import service as audit
from app.audit.actions import AuditAction
from app.errors import FormInvalid, NotFound
from app.forms import FormModel, checkbox, refuse, text, values_in_text
from app.portal.models import PortalAsset, PortalSetting

_HEX = re.compile(r"^#[0-9a-fA-F]{6}$")
LOGO_MAX_BYTES = 512 * 1024
_LOGO_TYPES = {b"\x89PNG\r\n\x1a\n": "image/png", b"\xff\xd8\xff": "image/jpeg", b"GIF8": "image/gif"}


@dataclass(frozen=True, slots=True)
class Branding:
    portal_name: str = "Ahead"
    accent_color: str = "#4f46e5"
    product_name: str = ""
    product_url: str = ""
    # Counts the logos uploaded, so that each has an address of its own (/branding/logo?v=N, kept a day by browsers
    # and caches); negative while the last one is removed, so that the next upload does not take an address used before.
    logo_version: int = 0

    @property
    def has_logo(self) -> bool:
        return self.logo_version > 0


# Settings are read on every page: each worker keeps them until the settings revision changes, which
# any change of a setting does (app/revision.py), so a change shows at once in every worker.
_cache: dict[str, tuple[int, Any]] = {}
_Setting = TypeVar("_Setting")


def _cached(session: Session, key: str, load: Callable[[], _Setting]) -> _Setting:
    rev = revision.settings(session)
    hit = _cache.get(key)
    if hit is not None and hit[0] == rev:
        return cast(_Setting, hit[1])  # each key is only ever filled by its own loader
    value = load()
    _cache[key] = (rev, value)
    return value


def get_branding(session: Session) -> Branding:
    def load() -> Branding:
        row = session.get(PortalSetting, "branding")
        return Branding(**_known(row.value)) if row is not None else Branding()

    return _cached(session, "branding", load)


def _known(value: dict[str, Any]) -> dict[str, Any]:
    fields = Branding.__dataclass_fields__
    return {k: v for k, v in (value or {}).items() if k in fields}


def clear_cache() -> None:
    _cache.clear()


def _web_address(value: Any) -> Any:
    if isinstance(value, str) and value and not re.match(r"^https?://[^\s/$.?#].[^\s]*$", value):
        raise refuse("Use a full address starting with https://.")
    return value


class BrandingUpdate(FormModel):
    """The branding form. The accent colour comes as typed and from the colour picker; which one counts
    depends on the colour stored (see `colour`), so the hex check is resolve_branding's."""

    portal_name: Annotated[str, text(60, required="Give the portal a name.")] = ""
    accent_color: Annotated[str, text(100)] = ""
    accent_picker: Annotated[str, text(100)] = ""
    product_name: Annotated[str, text(60)] = ""
    product_url: Annotated[str, text(2000), AfterValidator(_web_address)] = ""
    remove_logo: Annotated[bool, checkbox()] = False

    def colour(self, current: str) -> str:
        """Without JavaScript the colour picker and the text field cannot follow each other: a text value
        the admin changed wins, otherwise the picker's."""
        if self.accent_picker and (not self.accent_color or self.accent_color.lower() == current.lower()):
            return self.accent_picker
        return self.accent_color


def chosen_colour(session: Session, typed: Mapping[str, Any]) -> str:
    """The accent colour a branding form (as typed) asks for, against the stored one."""
    current = _stored_branding(session).accent_color
    return BrandingUpdate.model_construct(accent_color=str(typed.get("accent_color") or "").strip(),
                                          accent_picker=str(typed.get("accent_picker") or "").strip()).colour(current)


def resolve_branding(session: Session, data: BrandingUpdate) -> dict[str, str]:
    """The branding values to store; FormInvalid when the colour that counts is not a hex colour."""
    colour = data.colour(_stored_branding(session).accent_color)
    if not _HEX.match(colour):
        raise FormInvalid({"accent_color": "Use a colour like #4f46e5."})
    return {"portal_name": data.portal_name, "accent_color": colour.lower(), "product_name": data.product_name,
            "product_url": data.product_url}


def update_branding(session: Session, *, actor: Any, values: Mapping[str, str], logo: bytes | None = None,
                    remove_logo: bool = False) -> Branding:
    """Store branding `values` (as resolve_branding gives them) and a new logo, or remove the logo."""
    current = _stored_branding(session)
    clean: dict[str, Any] = dict(values)  # replace() also takes the int logo_version
    new = replace(current, **clean)
    if logo:
        content_type = _logo_type(logo)
        asset = session.get(PortalAsset, "logo")
        if asset is None:
            session.add(PortalAsset(name="logo", content_type=content_type, data=logo))
        else:
            asset.content_type, asset.data = content_type, logo
        new = replace(new, logo_version=abs(current.logo_version) + 1)
    elif remove_logo and current.has_logo:
        asset = session.get(PortalAsset, "logo")
        if asset is not None:
            session.delete(asset)
        new = replace(new, logo_version=-current.logo_version)
    row = session.get(PortalSetting, "branding")
    if row is None:
        session.add(PortalSetting(key="branding", value=asdict(new)))
    else:
        row.value = asdict(new)
    session.flush()
    audit.record(session, actor=actor, action=AuditAction.settings_branding, entity_type="setting", label="Branding",
                 changes=audit.diff(_audited(current), _audited(new)))
    clear_cache()
    return new


def _audited(branding: Branding) -> dict[str, Any]:
    """The branding as the audit log shows it: the logo's version, or 0 while there is none."""
    return {**asdict(branding), "logo_version": max(branding.logo_version, 0)}


def _stored_branding(session: Session) -> Branding:
    row = session.get(PortalSetting, "branding")
    return Branding(**_known(row.value)) if row is not None else Branding()


def _logo_type(data: bytes) -> str:
    if len(data) > LOGO_MAX_BYTES:
        raise FormInvalid({"logo": "The logo may be 512 KB at most."})
    for magic, content_type in _LOGO_TYPES.items():
        if data.startswith(magic):
            return content_type
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    raise FormInvalid({"logo": "Upload a PNG, JPEG, GIF or WebP image."})


def get_logo(session: Session) -> PortalAsset:
    asset = session.scalar(select(PortalAsset).where(PortalAsset.name == "logo"))
    if asset is None:
        raise NotFound()
    return asset


# --- access: private-portal mode and who counts as staff ---------------------------------------------


@dataclass(frozen=True, slots=True)
class StaffRule:
    """Who gets a staff role when signing in through OIDC: exact emails, email domains, group values."""

    emails: tuple[str, ...] = ()
    domains: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()

    def matches(self, *, email: str, groups: Sequence[str]) -> bool:
        email = email.lower()
        domain = email.rsplit("@", 1)[-1] if "@" in email else ""
        return (email in self.emails or (bool(domain) and domain in self.domains)
                or any(g in self.groups for g in groups))


@dataclass(frozen=True, slots=True)
class Access:
    private_mode: bool = False
    groups_claim: str = "groups"
    admin: StaffRule = StaffRule()
    pm: StaffRule = StaffRule()

    @property
    def maps_staff(self) -> bool:
        """Whether any OIDC sign-in can become staff (some email, domain or group is mapped)."""
        return any(getattr(rule, k) for rule in (self.admin, self.pm) for k in ("emails", "domains", "groups"))

    def staff_role_for(self, *, email: str, groups: Sequence[str]) -> str | None:
        """'admin', 'pm' or None, for an OIDC sign-in with this email and these groups."""
        if self.admin.matches(email=email, groups=groups):
            return "admin"
        if self.pm.matches(email=email, groups=groups):
            return "pm"
        return None


def _rule(value: Any) -> StaffRule:
    value = value or {}
    return StaffRule(**{k: tuple(str(v).strip().lower() if k != "groups" else str(v).strip()
                                 for v in value.get(k, []) if str(v).strip())
                        for k in ("emails", "domains", "groups")})


def get_access(session: Session) -> Access:
    def load() -> Access:
        row = session.get(PortalSetting, "access")
        value = row.value if row is not None else {}
        return Access(private_mode=bool(value.get("private_mode", False)),
                      groups_claim=str(value.get("groups_claim") or "groups"),
                      admin=_rule(value.get("admin")), pm=_rule(value.get("pm")))

    return _cached(session, "access", load)


def _as_dict(access: Access) -> dict[str, Any]:
    return {"private_mode": access.private_mode, "groups_claim": access.groups_claim,
            "admin": {k: list(getattr(access.admin, k)) for k in ("emails", "domains", "groups")},
            "pm": {k: list(getattr(access.pm, k)) for k in ("emails", "domains", "groups")}}


def update_access(session: Session, *, actor: Any, access: Access) -> Access:
    before = get_access_uncached(session)
    row = session.get(PortalSetting, "access")
    if row is None:
        session.add(PortalSetting(key="access", value=_as_dict(access)))
    else:
        row.value = _as_dict(access)
    session.flush()
    changes = audit.diff(_flat(before), _flat(access))
    if changes:
        audit.record(session, actor=actor, action=AuditAction.settings_access, entity_type="setting", label="Access",
                     changes=changes)
    clear_cache()
    return access


def get_access_uncached(session: Session) -> Access:
    _cache.pop("access", None)
    return get_access(session)


def _flat(access: Access) -> dict[str, Any]:
    d = _as_dict(access)
    return {"private_mode": d["private_mode"], "groups_claim": d["groups_claim"],
            **{f"{role}.{k}": ", ".join(v) for role in ("admin", "pm") for k, v in d[role].items()}}


def _split(text: str) -> list[str]:
    return [part.strip() for part in re.split(r"[\n,;]+", text or "") if part.strip()]


_AT_MOST = "200 values at most."


def _emails(text: str) -> tuple[str, ...]:
    emails: list[str] = []
    for raw in _split(text):
        try:
            email = validate_email(raw)
        except FormInvalid:
            raise refuse(f"“{raw[:80]}” is not an email address. Write one address per line.") from None
        if email not in emails:
            emails.append(email)
    if len(emails) > 200:
        raise refuse(_AT_MOST)
    return tuple(emails)


def _domains(text: str) -> tuple[str, ...]:
    try:
        domains = parse_domains(text)
    except FormInvalid as exc:
        raise refuse(exc.errors["domains"]) from None
    if len(domains) > 200:
        raise refuse(_AT_MOST)
    return tuple(domains)


def _groups(text: str) -> tuple[str, ...]:
    groups: list[str] = []
    for group in _split(text):
        if len(group) > 200:
            raise refuse("Keep each group value to 200 characters.")
        if group not in groups:
            groups.append(group)
    if len(groups) > 200:
        raise refuse(_AT_MOST)
    return tuple(groups)


def _claim(value: str) -> str:
    if not value:
        return "groups"
    if len(value) > 200 or re.search(r"\s", value):
        raise refuse("Use the claim's name as the provider sends it, without spaces (e.g. groups).")
    return value


Emails = Annotated[tuple[str, ...], values_in_text(_emails)]
Domains = Annotated[tuple[str, ...], values_in_text(_domains)]
Groups = Annotated[tuple[str, ...], values_in_text(_groups)]


class AccessUpdate(FormModel):
    """The /admin/access form: private mode, and which OIDC sign-ins become staff. Each list is typed one
    value per line or separated by commas; the field names are "<role>_<kind>", e.g. "admin_emails"."""

    private_mode: Annotated[bool, checkbox()] = False
    groups_claim: Annotated[str, text(300), AfterValidator(_claim)] = ""
    admin_emails: Emails = ()
    admin_domains: Domains = ()
    admin_groups: Groups = ()
    pm_emails: Emails = ()
    pm_domains: Domains = ()
    pm_groups: Groups = ()

    def access(self) -> Access:
        return Access(private_mode=self.private_mode, groups_claim=self.groups_claim,
                      admin=StaffRule(emails=self.admin_emails, domains=self.admin_domains, groups=self.admin_groups),
                      pm=StaffRule(emails=self.pm_emails, domains=self.pm_domains, groups=self.pm_groups))


# --- votes: whether customers see how many votes an item has -------------------------------------------


@dataclass(frozen=True, slots=True)
class VoteDisplay:
    """`hide_counts`: visitors and customers do not see vote counts (cards, item pages, API); staff always do."""

    hide_counts: bool = False


def get_vote_display(session: Session) -> VoteDisplay:
    def load() -> VoteDisplay:
        row = session.get(PortalSetting, "votes")
        return VoteDisplay(hide_counts=bool((row.value or {}).get("hide_counts", False)) if row is not None else False)

    return _cached(session, "votes", load)


def counts_shown(session: Session, viewer: Viewer) -> bool:
    """Whether this viewer sees vote counts: staff always; others unless an admin hid them."""
    return viewer.is_staff or not get_vote_display(session).hide_counts


class VoteDisplayUpdate(FormModel):
    hide_counts: Annotated[bool, checkbox()] = False


def update_vote_display(session: Session, *, actor: Any, hide_counts: bool) -> VoteDisplay:
    _cache.pop("votes", None)
    before = get_vote_display(session)
    new = VoteDisplay(hide_counts=hide_counts)
    row = session.get(PortalSetting, "votes")
    if row is None:
        session.add(PortalSetting(key="votes", value=asdict(new)))
    else:
        row.value = asdict(new)
    session.flush()
    if before != new:
        audit.record(session, actor=actor, action=AuditAction.settings_votes, entity_type="setting", label="Vote counts",
                     changes=audit.diff(asdict(before), asdict(new)))
    clear_cache()
    return new
