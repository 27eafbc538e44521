"""/api/v1 for staff tokens: the technology roadmap's initiatives and their backlog links, for teams that push
from CI or a tracker automation. Read with any staff token; write with a read-write one. Same services, rules
and audit log as /admin/tech (a change is recorded under the token's owner).

Never reachable with a session cookie, a customer's or staff's: no customer surface shows any of it.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy.orm import Session

from app.accounts.models import User
from app.api.schemas import ErrorBody, ValidationErrorBody
from app.deps import DbSession, TokenReader, TokenWriter
from app.errors import FormInvalid
from app.forms import read_values
from app.parsing import TEXT_PATTERN
from app.roadmap import service as roadmap
from app.tech import service as tech
from app.tech import trackers
from app.tech.models import BacklogLink, Initiative, InitiativeStatus, TrackerKind

router = APIRouter(prefix="/api/v1", tags=["technology roadmap (staff token)"])

_TOKEN: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "No staff API token, or one that is unknown, revoked or expired "
                                             "(`WWW-Authenticate: Bearer`)."},
    422: {"model": ValidationErrorBody, "description": "A parameter or field is invalid; `fields` says which."},
}
_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorBody, "description": "Nothing has this id."}}
_WRITE: dict[int | str, dict[str, Any]] = {
    **_TOKEN, **_NOT_FOUND,
    403: {"model": ErrorBody, "description": "The token is read-only."},
    400: {"model": ErrorBody, "description": "The body is not valid JSON."},
}
InitiativeId = Annotated[int, Path(ge=1, le=2**31 - 1, description="The initiative's id.")]
LinkId = Annotated[int, Path(ge=1, le=2**31 - 1, description="The link's id.")]
ItemId = Annotated[str, Path(min_length=1, max_length=16, pattern=r"^[a-z0-9]+$", description="The item's id.")]


# --- schemas --------------------------------------------------------------------------------------------


class ProgressPublic(BaseModel):
    done: int
    total: int
    percent: int = Field(description="By estimate when every link has one, else by count.")
    by_estimate: bool
    rule: str = Field(description="How the percentage was computed, in words.")

    @classmethod
    def of(cls, progress: tech.Progress) -> ProgressPublic:
        return cls(done=progress.done, total=progress.total, percent=progress.percent,
                   by_estimate=progress.by_estimate, rule=progress.rule)


class LinkPublic(BaseModel):
    id: int
    kind: TrackerKind
    key: str = Field(examples=["PAY-142", "acme/app#88"])
    url: str
    title: str
    status: str
    started: bool
    done: bool
    estimate: float | None
    initiative: int | None = Field(description="The initiative it hangs off, or null for an item's own link: the "
                                               "same issue is listed once for each initiative that links it.")

    @classmethod
    def of(cls, link: BacklogLink) -> LinkPublic:
        return cls(id=link.id, kind=link.kind, key=link.key, url=link.url, title=link.title, status=link.status,
                   started=link.started, done=link.done,
                   estimate=float(link.estimate) if link.estimate is not None else None,
                   initiative=link.initiative_id)


class OwnerPublic(BaseModel):
    id: int
    name: str


class InitiativePublic(BaseModel):
    id: int
    title: str
    description: str = Field(description="Markdown.")
    status: InitiativeStatus
    owner: OwnerPublic | None
    quarter: str | None = Field(description="YYYY-Qn, or null.", examples=["2027-Q1"])
    items: list[str] = Field(description="The ids of the roadmap items it delivers.")
    links: list[LinkPublic]
    progress: ProgressPublic

    @classmethod
    def of(cls, initiative: Initiative, links: list[BacklogLink]) -> InitiativePublic:
        quarter = (f"{initiative.target_year}-Q{initiative.target_quarter}"
                   if initiative.target_year and initiative.target_quarter else None)
        owner = initiative.owner
        return cls(id=initiative.id, title=initiative.title, description=initiative.description,
                   status=initiative.status, quarter=quarter,
                   owner=OwnerPublic(id=owner.id, name=owner.name) if owner is not None else None,
                   items=[i.public_id for i in initiative.items], links=[LinkPublic.of(link) for link in links],
                   progress=ProgressPublic.of(tech.progress_of(links)))


class InitiativeCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: str = Field(min_length=1, max_length=200, pattern=TEXT_PATTERN)
    description: str = Field(default="", max_length=20000, pattern=TEXT_PATTERN, description="Markdown.")
    status: InitiativeStatus = InitiativeStatus.proposed
    owner_id: int | None = Field(default=None, ge=1, le=2**31 - 1, description="A staff member's id.")
    quarter: str | None = Field(default=None, pattern=r"^20\d\d-Q[1-4]$", description="YYYY-Qn.")


class LinkCreate(BaseModel):
    """An issue by its address (the tracker and key are read from it), or by `kind` and `key`.

    One status per tracker issue: when the issue is linked elsewhere already, the new link takes what Ahead
    knows of it (status, done, the tracker's updated-at, and its title unless one is sent); `status` and `done`
    sent are then ignored. A later webhook delivery, or a PATCH of `status` or `done`, updates every link of it."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(default="", max_length=2000, pattern=TEXT_PATTERN, examples=["https://github.com/acme/app/issues/88"])
    kind: TrackerKind | None = None
    key: str | None = Field(default=None, min_length=1, max_length=200, pattern=TEXT_PATTERN)
    title: str = Field(default="", max_length=300, pattern=TEXT_PATTERN)
    status: str = Field(default="", max_length=80, pattern=TEXT_PATTERN)
    done: bool = False
    estimate: float | None = Field(default=None, ge=0, le=999999)


def _sent_as_null(value: Any) -> Any:
    """A PATCH field that cannot be empty, sent as null: refused (422), not read as "unchanged" (a client that sent
    `{"title": null}` was told 200 and kept the old title)."""
    if value is None:
        raise ValueError("may not be null: leave the field out to keep its value")
    return value


class InitiativeUpdate(BaseModel):
    """Only the fields sent change; `owner_id` or `quarter` sent as null clear them; `title`, `description` and
    `status` may not be null."""

    model_config = ConfigDict(extra="forbid")
    _not_null = field_validator("title", "description", "status", mode="before")(_sent_as_null)

    title: str | None = Field(default=None, min_length=1, max_length=200, pattern=TEXT_PATTERN)
    description: str | None = Field(default=None, max_length=20000, pattern=TEXT_PATTERN, description="Markdown.")
    status: InitiativeStatus | None = None
    owner_id: int | None = Field(default=None, ge=1, le=2**31 - 1, description="A staff member's id, or null.")
    quarter: str | None = Field(default=None, pattern=r"^20\d\d-Q[1-4]$", description="YYYY-Qn, or null.")


class LinkUpdate(BaseModel):
    """Only the fields sent change. A new `url` alone re-reads the tracker and key from it; a new `kind` or
    `key` must agree with the address the link keeps (send `url` too, or `""` to drop it). `estimate` null
    removes it; the other fields may not be null."""

    model_config = ConfigDict(extra="forbid")
    _not_null = field_validator("url", "kind", "key", "title", "status", "done", mode="before")(_sent_as_null)

    url: str | None = Field(default=None, max_length=2000, pattern=TEXT_PATTERN)
    kind: TrackerKind | None = None
    key: str | None = Field(default=None, min_length=1, max_length=200, pattern=TEXT_PATTERN)
    title: str | None = Field(default=None, max_length=300, pattern=TEXT_PATTERN)
    status: str | None = Field(default=None, max_length=80, pattern=TEXT_PATTERN,
                               description="As the tracker words it; when left out, a change of `done` sets "
                                           "`done` or `open`.")
    done: bool | None = None
    estimate: float | None = Field(default=None, ge=0, le=999999)


class ItemLink(BaseModel):
    model_config = ConfigDict(extra="forbid")

    item: str = Field(min_length=1, max_length=16, pattern=r"^[a-z0-9]+$", description="The item's id.")


class ItemDeliveryPublic(BaseModel):
    item: str
    initiatives: list[int]
    links: list[LinkPublic] = Field(description="The item's own links.")
    via_initiatives: list[LinkPublic] = Field(description="The links of the live initiatives that deliver it, once "
                                                          "per initiative (`initiative` says whose).")
    progress: ProgressPublic = Field(description="Each tracker issue counts once, however many of these list it.")


# --- routes ---------------------------------------------------------------------------------------------


def _initiative(session: Session, initiative: Initiative) -> InitiativePublic:
    return InitiativePublic.of(initiative, tech.links_of_initiatives(session, [initiative.id])[initiative.id])


@router.get("/initiatives", response_model=list[InitiativePublic], responses=_TOKEN,
            summary="The technology roadmap's initiatives")
async def list_initiatives(
    session: DbSession, _viewer: TokenReader,
    status: Annotated[InitiativeStatus | None, Query(description="Only this status.")] = None,
    quarter: Annotated[str | None, Query(pattern=r"^(20\d\d-Q[1-4]|none)$",
                                         description="Only this target quarter (YYYY-Qn), or `none`.")] = None,
) -> list[InitiativePublic]:
    """Every initiative (filtered), with its items, its backlog links and its delivery progress."""
    initiatives = tech.list_initiatives(session, tech.InitiativeFilters(status=status, quarter=quarter or ""))
    links = tech.links_of_initiatives(session, [i.id for i in initiatives])
    return [InitiativePublic.of(i, links[i.id]) for i in initiatives]


@router.get("/initiatives/{id}", response_model=InitiativePublic, responses={**_TOKEN, **_NOT_FOUND},
            summary="One initiative")
async def get_initiative(session: DbSession, _viewer: TokenReader, id: InitiativeId) -> InitiativePublic:
    return _initiative(session, tech.get_initiative(session, id))


@router.post("/initiatives", response_model=InitiativePublic, status_code=201, responses=_WRITE,
             summary="Create an initiative")
async def create_initiative(session: DbSession, viewer: TokenWriter, body: InitiativeCreate) -> InitiativePublic:
    """As /admin/tech/new does; audited under the token's owner. Needs a read-write token."""
    form = read_values(tech.InitiativeForm, {"title": body.title, "description": body.description,
                                             "status": body.status.value, "owner_id": str(body.owner_id or ""),
                                             "quarter": body.quarter or ""})
    data = form.resolve(lambda d: tech.resolve_initiative(session, d))
    initiative = tech.create_initiative(session, data=data, actor=_owner(viewer.user))
    return _initiative(session, tech.get_initiative(session, initiative.id))


@router.api_route("/initiatives", methods=["PUT", "PATCH", "DELETE", "OPTIONS"], include_in_schema=False)
async def initiatives_methods() -> None:
    """Two routes share this path: a 405 names both of their methods in `Allow`, not just the first's."""
    raise HTTPException(status_code=405, headers={"Allow": "GET, HEAD, POST"})


@router.patch("/initiatives/{id}", response_model=InitiativePublic, responses=_WRITE, summary="Change an initiative")
async def update_initiative(session: DbSession, viewer: TokenWriter, id: InitiativeId,
                            body: InitiativeUpdate) -> InitiativePublic:
    """As the initiative's page in /admin/tech does, with the same checks (a title, a staff owner, a quarter);
    audited under the token's owner. Only the fields sent change. Needs a read-write token."""
    initiative = tech.get_initiative(session, id)
    sent = body.model_fields_set
    current = tech.initiative_values(initiative)
    values = {
        "title": body.title if "title" in sent and body.title is not None else current["title"],
        "description": body.description if "description" in sent and body.description is not None
        else current["description"],
        "status": body.status.value if "status" in sent and body.status is not None else current["status"],
        "owner_id": str(body.owner_id or "") if "owner_id" in sent else current["owner_id"],
        "quarter": (body.quarter or "") if "quarter" in sent else current["quarter"],
    }
    form = read_values(tech.InitiativeForm, values)
    data = form.resolve(lambda d: tech.resolve_initiative(session, d))
    tech.update_initiative(session, initiative=initiative, data=data, actor=_owner(viewer.user))
    return _initiative(session, tech.get_initiative(session, id))


@router.delete("/initiatives/{id}", status_code=204, responses=_WRITE, summary="Delete an initiative")
async def delete_initiative(session: DbSession, viewer: TokenWriter, id: InitiativeId) -> None:
    """With its backlog links; the items it delivered stay. Audited under the token's owner. Needs a read-write
    token."""
    tech.delete_initiative(session, initiative=tech.get_initiative(session, id), actor=_owner(viewer.user))


@router.api_route("/initiatives/{id}", methods=["PUT", "POST", "OPTIONS"], include_in_schema=False)
async def initiative_methods(id: InitiativeId) -> None:
    """Three routes share this path: a 405 names all their methods in `Allow`."""
    raise HTTPException(status_code=405, headers={"Allow": "GET, HEAD, PATCH, DELETE"})


def _owner(user: User | None) -> User:
    assert user is not None  # a token always has its owner
    return user


def _link_data(body: LinkCreate) -> tuple[TrackerKind, str, str]:
    if body.kind is not None and body.key is not None:
        return body.kind, body.key.strip(), body.url.strip()
    if body.kind is not None or body.key is not None:
        raise FormInvalid({"key": "Give both `kind` and `key`, or an issue's `url`."})
    try:
        ref = trackers.recognise(body.url)
    except trackers.NotAnIssueUrl as exc:
        raise FormInvalid({"url": str(exc)}) from None
    return ref.kind, ref.key, ref.url


def _add(session: Session, viewer_user: User | None, body: LinkCreate, **owner: Any) -> BacklogLink:
    kind, key, url = _link_data(body)
    estimate = Decimal(repr(body.estimate)).quantize(Decimal("0.01")) if body.estimate is not None else None
    return tech.add_link_ref(session, kind=kind, key=key, url=url, title=body.title.strip(), status=body.status.strip(),
                             done=body.done, estimate=estimate, actor=_owner(viewer_user), **owner)


@router.post("/initiatives/{id}/links", response_model=LinkPublic, status_code=201, responses=_WRITE,
             summary="Link a tracker issue to an initiative")
async def add_initiative_link(session: DbSession, viewer: TokenWriter, id: InitiativeId,
                              body: LinkCreate) -> LinkPublic:
    """By the issue's address (`url`), or by `kind` and `key` for a tracker whose addresses Ahead does not read.
    The same issue twice on one initiative is refused (422). Needs a read-write token."""
    initiative = tech.get_initiative(session, id)
    return LinkPublic.of(_add(session, viewer.user, body, initiative=initiative))


def _change(link: BacklogLink, body: LinkUpdate) -> tech.LinkChange:
    """The link as the PATCH body leaves it: sent fields replace, the rest stays."""
    sent = body.model_fields_set
    kind, key, url = link.kind, link.key, link.url
    if "url" in sent and body.url is not None:
        url = body.url.strip()
        if url and body.kind is None and body.key is None:
            try:
                ref = trackers.recognise(url)
            except trackers.NotAnIssueUrl as exc:
                raise FormInvalid({"url": str(exc)}) from None
            kind, key, url = ref.kind, ref.key, ref.url
    kind = body.kind if body.kind is not None else kind
    key = body.key.strip() if body.key is not None else key
    done = body.done if body.done is not None else link.done
    status = link.status
    if body.status is not None and body.status.strip():
        status = body.status.strip()
    elif done != link.done:
        status = "done" if done else "open"
    estimate = link.estimate
    if "estimate" in sent:
        estimate = Decimal(repr(body.estimate)).quantize(Decimal("0.01")) if body.estimate is not None else None
    title = body.title.strip() if body.title is not None else link.title
    return tech.LinkChange(kind=kind, key=key, url=url, title=title, status=status, done=done, estimate=estimate)


@router.patch("/initiatives/{id}/links/{link_id}", response_model=LinkPublic, responses=_WRITE,
              summary="Change a tracker issue linked to an initiative")
async def update_initiative_link(session: DbSession, viewer: TokenWriter, id: InitiativeId, link_id: LinkId,
                                 body: LinkUpdate) -> LinkPublic:
    """Title, status, done, estimate, or the issue itself (with the checks of a new link: the key in its
    tracker's format, an address of that very issue, not linked here already). Only the fields sent change;
    audited under the token's owner. Needs a read-write token."""
    link = tech.get_link(session, link_id, initiative=tech.get_initiative(session, id))
    tech.update_link(session, link=link, change=_change(link, body), actor=_owner(viewer.user))
    return LinkPublic.of(link)


@router.delete("/initiatives/{id}/links/{link_id}", status_code=204, responses=_WRITE,
               summary="Remove a tracker issue from an initiative")
async def remove_initiative_link(session: DbSession, viewer: TokenWriter, id: InitiativeId, link_id: LinkId) -> None:
    """Audited under the token's owner. Needs a read-write token."""
    initiative = tech.get_initiative(session, id)
    tech.remove_link(session, link=tech.get_link(session, link_id, initiative=initiative), actor=_owner(viewer.user))


@router.api_route("/initiatives/{id}/links/{link_id}", methods=["GET", "PUT", "POST", "OPTIONS"],
                  include_in_schema=False)
async def initiative_link_methods(id: InitiativeId, link_id: LinkId) -> None:
    """Two routes share this path: a 405 names both of their methods in `Allow`."""
    raise HTTPException(status_code=405, headers={"Allow": "PATCH, DELETE"})


@router.post("/initiatives/{id}/items", response_model=InitiativePublic, responses=_WRITE,
             summary="Link a roadmap item the initiative delivers")
async def link_item(session: DbSession, viewer: TokenWriter, id: InitiativeId, body: ItemLink) -> InitiativePublic:
    """Linking an item already linked changes nothing. Needs a read-write token."""
    initiative = tech.get_initiative(session, id)
    tech.link_item(session, initiative=initiative, item=roadmap.get_item_for_staff(session, body.item),
                   actor=_owner(viewer.user))
    return _initiative(session, initiative)


@router.get("/items/{id}/delivery", response_model=ItemDeliveryPublic, responses={**_TOKEN, **_NOT_FOUND},
            summary="What delivers an item, and its progress")
async def get_item_delivery(session: DbSession, _viewer: TokenReader, id: ItemId) -> ItemDeliveryPublic:
    item = roadmap.get_item_for_staff(session, id)
    own, via = tech.links_of_item(session, item)
    return ItemDeliveryPublic(item=item.public_id, initiatives=[i.id for i in tech.initiatives_for_item(session, item)],
                              links=[LinkPublic.of(link) for link in own],
                              via_initiatives=[LinkPublic.of(link) for link in via],
                              progress=ProgressPublic.of(tech.progress_of(own + via)))


@router.post("/items/{id}/links", response_model=LinkPublic, status_code=201, responses=_WRITE,
             summary="Link a tracker issue to an item")
async def add_item_link(session: DbSession, viewer: TokenWriter, id: ItemId, body: LinkCreate) -> LinkPublic:
    item = roadmap.get_item_for_staff(session, id)
    return LinkPublic.of(_add(session, viewer.user, body, item=item))




@router.patch("/items/{id}/links/{link_id}", response_model=LinkPublic, responses=_WRITE,
              summary="Change a tracker issue linked to an item")
async def update_item_link(session: DbSession, viewer: TokenWriter, id: ItemId, link_id: LinkId,
                           body: LinkUpdate) -> LinkPublic:
    """As for an initiative's link. Needs a read-write token."""
    link = tech.get_link(session, link_id, item=roadmap.get_item_for_staff(session, id))
    tech.update_link(session, link=link, change=_change(link, body), actor=_owner(viewer.user))
    return LinkPublic.of(link)


@router.delete("/items/{id}/links/{link_id}", status_code=204, responses=_WRITE,
               summary="Remove a tracker issue from an item")
async def remove_item_link(session: DbSession, viewer: TokenWriter, id: ItemId, link_id: LinkId) -> None:
    """Audited under the token's owner. Needs a read-write token."""
    link = tech.get_link(session, link_id, item=roadmap.get_item_for_staff(session, id))
    tech.remove_link(session, link=link, actor=_owner(viewer.user))


@router.api_route("/items/{id}/links/{link_id}", methods=["GET", "PUT", "POST", "OPTIONS"], include_in_schema=False)
async def item_link_methods(id: ItemId, link_id: LinkId) -> None:
    """Two routes share this path: a 405 names both of their methods in `Allow`."""
    raise HTTPException(status_code=405, headers={"Allow": "PATCH, DELETE"})
