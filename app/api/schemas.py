"""Public shapes of the read API. They carry only what a visitor may see: never the integer id,
never internal notes."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from app.discussion.service import CommentView
from app.markup import render_markdown
from app.parsing import TEXT_PATTERN
from app.roadmap.models import Item, Product, Stage, StageChange, Tag
from app.roadmap.service import Sort
from app.voting.models import Importance

ImportanceKey = Literal["nice_to_have", "important", "critical"]


class ErrorBody(BaseModel):
    """Every error the API gives has this body."""

    error: str = Field(description="A stable code, e.g. `not_found` or `invalid`.", examples=["not_found"])
    detail: str = Field(description="A sentence for people.", examples=["There is nothing at this address."])


class ValidationErrorBody(ErrorBody):
    """An invalid query or path parameter: `fields` names each one and what is wrong with it."""

    fields: dict[str, str] = Field(default_factory=dict, examples=[{"per_page": "Input should be less than or "
                                                                                "equal to 100"}])


class Ref(BaseModel):
    """A product, stage or tag: its slug (usable as a filter) and its display name."""

    slug: str = Field(examples=["planned"])
    name: str = Field(examples=["Planned"])

    @classmethod
    def of(cls, obj: Product | Stage | Tag) -> Ref:
        return cls(slug=obj.slug, name=obj.name)


class ItemPublic(BaseModel):
    model_config = ConfigDict(json_schema_extra={"description": "A roadmap item as a visitor sees it."})

    id: str = Field(description="The item's public id (the one in its URL).", examples=["k7m2xq9p"])
    title: str
    summary: str = Field(description="One line.")
    description: str = Field(description="The description's Markdown source.")
    description_html: str = Field(description="The description rendered to sanitised HTML.")
    url: str = Field(description="The item's page.", examples=["https://roadmap.example.com/items/k7m2xq9p/dark-mode"])
    product: Ref
    stage: Ref
    timeframe: str | None = Field(description="`Now`, `Next`, `Later` or a target quarter such as `2027 Q1`; null once "
                                              "the item is released (see `released_at`) or declined.",
                                  examples=["2027 Q1"])
    horizon: Literal["now", "next", "later"] | None = Field(
        description="Where the timeframe falls today: a target quarter is placed by how far away it is; null once the "
                    "item is released or declined.")
    confidence: Literal["low", "medium", "high"] | None = Field(description="How sure the team is of the timeframe; "
                                                                            "null once released or declined.")
    tags: list[Ref]
    vote_count: int | None = Field(ge=0, description="Votes for the item; null when the portal hides vote counts "
                                                     "from visitors and customers (staff always see them).")
    my_vote: ImportanceKey | None = Field(default=None, description="Your vote's importance when you are signed "
                                                                    "in and voted for the item; otherwise null.")
    published_at: datetime | None = Field(description="Always set for visitors; staff also see drafts (null).")
    released_at: datetime | None
    updated_at: datetime

    @classmethod
    def fields_of(cls, item: Item, *, base_url: str, my_vote: Importance | None = None,
                  show_count: bool = True) -> dict[str, object]:
        planned = item.planned_timeframe
        return {
            "id": item.public_id,
            "title": item.title,
            "summary": item.summary,
            "description": item.description,
            "description_html": str(render_markdown(item.description)),
            "url": base_url + item.path,
            "product": Ref.of(item.product),
            "stage": Ref.of(item.stage),
            # A shipped or declined item has no future timeframe: the old plan would read as a promise.
            "timeframe": planned,
            "horizon": item.horizon.value if planned is not None else None,
            "confidence": item.confidence.value if item.confidence and planned is not None else None,
            "tags": [Ref.of(t) for t in item.tags],
            "vote_count": item.vote_count if show_count else None,
            "my_vote": my_vote.key if my_vote is not None else None,
            "published_at": item.published_at,
            "released_at": item.released_at,
            "updated_at": item.updated_at,
        }

    @classmethod
    def of(cls, item: Item, *, base_url: str, my_vote: Importance | None = None, show_count: bool = True) -> ItemPublic:
        return cls.model_validate(cls.fields_of(item, base_url=base_url, my_vote=my_vote, show_count=show_count))


class TimelineEntry(BaseModel):
    """One move between stages; the first entry (when the item was added) has no `from_stage`."""

    from_stage: Ref | None
    to_stage: Ref
    changed_at: datetime

    @classmethod
    def of(cls, change: StageChange) -> TimelineEntry:
        return cls(from_stage=Ref.of(change.from_stage) if change.from_stage else None,
                   to_stage=Ref.of(change.to_stage), changed_at=change.changed_at)


class ItemDetail(ItemPublic):
    model_config = ConfigDict(json_schema_extra={"description": "An item with its release notes and timeline."})

    release_notes: str = Field(description="Markdown source; empty until the item is released (notes written "
                                           "ahead of a release stay private until then).")
    release_notes_html: str = Field(description="The release notes rendered to sanitised HTML.")
    timeline: list[TimelineEntry] = Field(description="Stage changes, oldest first.")

    @classmethod
    def of_item(cls, item: Item, timeline: list[StageChange], *, base_url: str, my_vote: Importance | None = None,
                show_count: bool = True) -> ItemDetail:
        notes = item.release_notes if item.released_at else ""
        return cls.model_validate({
            **ItemPublic.fields_of(item, base_url=base_url, my_vote=my_vote, show_count=show_count),
            "release_notes": notes,
            "release_notes_html": str(render_markdown(notes)) if notes else "",
            "timeline": [TimelineEntry.of(c) for c in timeline],
        })


class ItemPage(BaseModel):
    """One page of items and how many there are in all."""

    items: list[ItemPublic]
    total: int = Field(ge=0, description="Items matching the filters, over all pages.")
    page: int = Field(ge=1)
    per_page: int = Field(ge=1, le=100)
    sort: Sort = Field(
        description="The order of `items`: the `sort` asked for, or `newest` when you asked for `top` or "
                    "`trending` and vote counts are hidden from you.")


# --- votes ---------------------------------------------------------------------------------------------


class VoteCreate(BaseModel):
    """A vote, or a new importance for your existing vote, with an optional private note."""

    model_config = ConfigDict(extra="forbid")

    importance: ImportanceKey = Field(description="How much the item matters to you.", examples=["important"])
    reason: str = Field(default="", max_length=2000, pattern=TEXT_PATTERN,
                        description="Optional: why it matters. Private: only the product team reads it. It replaces the "
                                    "reason you gave before; empty or absent keeps that one. Control "
                                    "characters other than tab and line breaks are refused (422).",
                        examples=["We lose a day every month exporting this by hand."])


class VoteStatePublic(BaseModel):
    """Your vote on one item after the change, and the item's count."""

    item: str = Field(description="The item's public id.", examples=["k7m2xq9p"])
    my_vote: ImportanceKey | None = Field(description="Your vote's importance; null once withdrawn.")
    vote_count: int | None = Field(ge=0, description="The item's votes; null when vote counts are hidden from you.")


class MyVotePublic(BaseModel):
    """One of your votes."""

    item: ItemPublic
    importance: ImportanceKey
    voted_at: datetime = Field(description="When you voted or last changed the importance.")
    recorded_by_team: bool = Field(description="True when the product team recorded this vote for you "
                                               "(from a call, meeting, ticket or email).")


class MyVotes(BaseModel):
    """Your votes on items you may see, most recent first."""

    votes: list[MyVotePublic]


# --- comments ------------------------------------------------------------------------------------------


class CommentPublic(BaseModel):
    """A comment as you see it on the item page."""

    id: str = Field(description="The comment's public id; `/comments/{id}` on the portal leads to it.",
                    examples=["q4hw7nkt2m"])
    author: str = Field(description="The author's display name (never an email address); empty once deleted.")
    body: str = Field(description="The Markdown source; empty once deleted.")
    body_html: str = Field(description="The body rendered to sanitised HTML.")
    created_at: datetime
    edited_at: datetime | None = Field(description="When the author last changed the text, if ever.")
    official: bool = Field(description="Written by the product team.")
    deleted: bool = Field(description="Deleted by its author: kept as a placeholder because it has replies.")
    hidden: bool = Field(description="Hidden by moderators; only staff receive hidden comments.")

    @classmethod
    def fields_of(cls, comment: CommentView) -> dict[str, object]:
        return {
            "id": comment.public_id, "author": comment.author_name, "body": comment.body,
            "body_html": str(render_markdown(comment.body)) if comment.body else "",
            "created_at": comment.created_at, "edited_at": comment.edited_at, "official": comment.is_official,
            "deleted": comment.is_deleted, "hidden": comment.is_hidden,
        }


class CommentThread(CommentPublic):
    """A comment that starts a thread, with all its replies (oldest first; replies are one level deep)."""

    replies: list[CommentPublic]

    @classmethod
    def of(cls, thread: CommentView) -> CommentThread:
        return cls.model_validate({**cls.fields_of(thread),
                                   "replies": [CommentPublic.model_validate(cls.fields_of(r)) for r in thread.replies]})


class CommentPage(BaseModel):
    """One page of an item's discussion: threads oldest first, each whole."""

    pinned: CommentThread | None = Field(description="The product team's pinned answer, the same on every page; "
                                                     "it is not repeated in `comments`.")
    comments: list[CommentThread]
    total: int = Field(ge=0, description="Comments and replies over all pages (the item page's count).")
    next_cursor: str | None = Field(description="Pass it as `after` to get the next page; null on the last page.",
                                    examples=["q4hw7nkt2m"])
