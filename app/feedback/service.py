"""Ideas, private feedback, the product team's inbox, and votes captured on a customer's behalf.

All SQL of the feedback domain lives here. Feedback is private: nothing in this module is reachable
from public pages, feeds, search or the API. Customers only ever see their own feedback (on /me), and
an item it was linked to only when `visible_items(viewer)` lets them.

States: an idea or an unattached note arrives `new` (the inbox's triage queue); feedback that is
attached to an item (a "tell us why" reason given with a vote, a note captured with a vote, or an idea
the team linked or turned into an item) is `linked`; the team may also `decline` an idea (with a reason
the author reads) or `archive` anything.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, cast
from urllib.parse import urlsplit

from pydantic import BeforeValidator, ValidationInfo, field_validator
from sqlalchemy import Select, and_, func, select, update
from sqlalchemy.orm import Session, aliased, selectinload

from app.accounts import service as accounts
from app.accounts.models import Role, User
from app.accounts.viewer import Viewer
from app.addresses import validate_email
from app.audit import service as audit
from app.audit.actions import AuditAction
from app.db import in_chunks, utcnow
from app.errors import Conflict, FormInvalid, NotFound
from app.feedback.models import Feedback, FeedbackKind, FeedbackState
from app.forms import FormModel, choice, refuse, text, validate_form, whole_number
from app.organisations import service as organisations
from app.organisations.models import Organisation, Segment
from app.parsing import parse_int
from app.portal import service as portal
from app.roadmap import search
from app.roadmap import service as roadmap
from app.roadmap.models import Item, Product, Stage
from app.roadmap.visibility import visible_items
from app.voting import service as voting
from app.voting.models import CaptureSource, Importance, Vote
from app.webhooks import service as webhooks

MAX_TITLE = 200  # what feedback.title holds
MAX_BODY = 5000
MAX_REASON = 2000
MAX_NAME = 120
MAX_URL = 500  # what feedback.source_url and votes.source_url hold
INBOX_PER_PAGE = 50
SIMILAR_LIMIT = 5

SOURCE_LABELS = {
    CaptureSource.call: "a call",
    CaptureSource.ticket: "a support ticket",
    CaptureSource.meeting: "a meeting",
    CaptureSource.email: "an email",
}
SOURCE_NAMES = {
    CaptureSource.call: "Call",
    CaptureSource.ticket: "Support ticket",
    CaptureSource.meeting: "Meeting",
    CaptureSource.email: "Email",
}
KIND_LABELS = {FeedbackKind.idea: "Idea", FeedbackKind.reason: "Reason with a vote", FeedbackKind.note: "Note"}
STATE_LABELS = {
    FeedbackState.new: "New",
    FeedbackState.linked: "Linked",
    FeedbackState.archived: "Archived",
    FeedbackState.declined: "Declined",
}


def _text(value: Any, *, field: str, limit: int, required: str = "", errors: dict[str, str]) -> str:
    text = str(value or "").strip()
    if required and not text:
        errors[field] = required
    elif len(text) > limit:
        errors[field] = f"Keep it to {limit:,} characters (it has {len(text):,})."
    return text


def parse_id(raw: Any) -> int | None:
    """A database id from a form value, or None (PostgreSQL refuses integers beyond 32 bits)."""
    return parse_int(raw, minimum=1)


def takes_votes(item: Item) -> bool:
    """Released, declined (closed) and merged items take no votes (the rule lives on the model)."""
    return item.can_be_voted()


# --- customers: ideas -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IdeaInput:
    title: str
    body: str
    product: Product | None


_PRODUCT_GONE = "That product no longer exists; please choose again."


class IdeaCreate(FormModel):
    """A customer's idea (/ideas/new)."""

    title: Annotated[str, text(MAX_TITLE, required="Give your idea a short title.",
                               one_line="The title is one line.")] = ""
    body: Annotated[str, text(MAX_BODY)] = ""
    product_id: Annotated[int | None, whole_number(_PRODUCT_GONE, required=False)] = None


def resolve_idea(session: Session, data: IdeaCreate) -> IdeaInput:
    """A validated idea with its product; FormInvalid when the product no longer exists."""
    product = session.get(Product, data.product_id) if data.product_id is not None else None
    if data.product_id is not None and product is None:
        raise FormInvalid({"product_id": _PRODUCT_GONE})
    return IdeaInput(title=data.title, body=data.body, product=product)


def parse_idea(session: Session, *, title: str, body: str, product_id: str = "") -> IdeaInput:
    """An idea from plain values (seed data, tests): the form's model, then the database."""
    return resolve_idea(session, validate_form(IdeaCreate, {"title": title, "body": body, "product_id": product_id}))


def submit_idea(session: Session, *, author: User, data: IdeaInput) -> Feedback:
    """An idea for the product team's inbox. It never becomes an item by itself."""
    now = utcnow()
    idea = Feedback(kind=FeedbackKind.idea, state=FeedbackState.new, author_id=author.id,
                    organisation_id=author.organisation_id, product_id=data.product.id if data.product else None,
                    title=data.title, body=data.body, created_at=now, updated_at=now)
    session.add(idea)
    session.flush()
    _emit_feedback(session, idea, author=author, item=None)
    return idea


def _emit_feedback(session: Session, feedback: Feedback, *, author: User, item: Item | None,
                   captured_by: User | None = None) -> None:
    if not webhooks.wants(session, "feedback.created"):
        return
    webhooks.emit(session, "feedback.created", {
        "item": webhooks.item_data(item) if item is not None else None,
        "feedback": {"id": feedback.id, "kind": feedback.kind.value, "title": feedback.title or None,
                     "body": feedback.body, "author": webhooks.person(author),
                     "captured_by": webhooks.person(captured_by)}})


def clean_reason(body: str) -> str:
    """A "tell us why" note as it is stored (trimmed; empty: none). FormInvalid({"reason": …}) when too long."""
    errors: dict[str, str] = {}
    text = _text(body, field="reason", limit=MAX_REASON, errors=errors)
    if errors:
        raise FormInvalid(errors)
    return text


@dataclass(frozen=True, slots=True)
class SavedReason:
    """A person's "tell us why" reason on an item after `save_reason`."""

    text: str  # as it stands now; "" when there is none
    change: str  # "added", "updated", "removed" or "kept" (nothing changed)
    feedback: Feedback | None = None  # the row, unless there is none


def _reason_row(session: Session, *, item: Item, author: User) -> Feedback | None:
    return session.scalar(select(Feedback).where(Feedback.kind == FeedbackKind.reason, Feedback.item_id == item.id,
                                                 Feedback.author_id == author.id))


def reason_of(session: Session, *, item: Item, author: User | None) -> str:
    """The reason the person gave with their vote on the item ("" when none): shown back to them only."""
    if author is None:
        return ""
    return session.scalar(select(Feedback.body).where(Feedback.kind == FeedbackKind.reason,
                                                      Feedback.item_id == item.id, Feedback.author_id == author.id)
                          ) or ""


def save_reason(session: Session, *, item: Item, author: User, body: str) -> SavedReason:
    """The one "tell us why" reason a person gives with their vote on an item: private feedback attached to it.

    One per person and item (a unique index): new text replaces the reason they gave before, in place — the
    same row in the inbox and on /me, its time now that of the edit, its triage state as the team left it —;
    the same text changes nothing; empty text takes the reason back. FormInvalid({"reason": …}) when too long.
    The caller has already checked that the author may see and vote on the item, with the item's row locked.
    """
    text = clean_reason(body)
    existing = _reason_row(session, item=item, author=author)
    if existing is not None and existing.body == text:
        return SavedReason(text=text, change="kept", feedback=existing)
    if not text:
        if existing is None:
            return SavedReason(text="", change="kept")
        session.delete(existing)
        session.flush()
        return SavedReason(text="", change="removed")
    roadmap.lock_for_activity(session, item)  # not left behind on an item a merge is moving away from
    now = utcnow()
    if existing is not None:
        existing.body = text
        existing.created_at = existing.updated_at = now
        session.flush()
        return SavedReason(text=text, change="updated", feedback=existing)
    reason = Feedback(kind=FeedbackKind.reason, state=FeedbackState.linked, author_id=author.id,
                      organisation_id=author.organisation_id, item_id=item.id, product_id=item.product_id,
                      body=text, created_at=now, updated_at=now)
    session.add(reason)
    session.flush()
    _emit_feedback(session, reason, author=author, item=item)
    return SavedReason(text=text, change="added", feedback=reason)


def add_reason(session: Session, *, item: Item, author: User, body: str) -> Feedback | None:
    """A non-empty "tell us why" reason, saved as `save_reason` does (replacing an earlier one); None when the
    note is empty (nothing to store, and an earlier reason stays)."""
    if not clean_reason(body):
        return None
    return save_reason(session, item=item, author=author, body=body).feedback


# Words that say nothing about what an idea is about.
_STOP_WORDS = frozenset({
    "a", "an", "and", "are", "as", "at", "be", "but", "by", "can", "could", "do", "for", "from", "have",
    "how", "i", "in", "into", "is", "it", "let", "me", "my", "of", "on", "or", "our", "please", "should",
    "so", "that", "the", "their", "them", "this", "to", "us", "we", "when", "with", "would", "you", "your",
    "am", "go", "if", "no", "up", "get", "all", "any", "not", "new", "add", "want", "need", "able",
    # "X support" asks for X: "language support" is about languages, not about what else is "supported".
    "support", "supports", "needs", "needed", "wants", "wanted", "adds", "added", "adding", "gets", "getting",
})


@dataclass(frozen=True, slots=True)
class Suggestion:
    item: Item
    title_html: Any


# How much a word counts where it was found: a word in an item's title says far more about what the item
# is than one in its summary, and one in its description alone says little (e.g. "payroll clerk" in the
# summary of "Custom roles and permissions" does not make it a payroll export).
_FOUND_IN = {search.Tier.title: 1.0, search.Tier.heading: 0.5, search.Tier.anywhere: 0.2}
# An item is suggested when it holds at least this share of the title's (rarity-weighted) words: every
# word in its summary reaches it, and so does the rarer of two words in its title; words in its description
# alone never do. A title of one word asks for it in the item's title (its summary when no item has it in its title).
SIMILAR_THRESHOLD = 0.5
_SIMILAR_CANDIDATES = 30  # per word, best placed first


# Endings a whole word may grow and still be the same word ("export" → "exports", "exported").
_ENDINGS = frozenset({"", "s", "es", "d", "ed", "ing", "r", "er", "ers", "ion", "ions"})
_VOWEL = re.compile(r"[aeiouy]")


def _stem(word: str) -> str:
    """A small English suffix folding, the same for the title's words and the items' words: a plural
    ("timesheets", "policies"), then -ing or -ed ("exporting", "planned"), then a final e ("schedule",
    "scheduled" and "scheduling" all fold to "schedul"). Short words, words that are not plain letters
    ("v2", "1000"), "-eed" words ("speed") and what would leave fewer than four letters or no vowel
    ("noted", "note", "timing", "string") stay: a stem never becomes a short word of its own ("not")."""
    if len(word) <= 3 or not word.isalpha() or not word.isascii():
        return word
    if word.endswith("ies") and len(word) > 4:
        word = word[:-3] + "y"
    elif word.endswith("s") and not word.endswith(("ss", "us", "is")):
        word = word[:-1]
    for ending in ("ing", "ed"):
        base = word[:-len(ending)]
        if word.endswith(ending) and len(base) >= 4 and _VOWEL.search(base) and not word.endswith("eed"):
            if base[-1] == base[-2] and base[-1] not in "aeioulsfz":
                base = base[:-1]  # "planned" → "plan", "swapping" → "swap"; not "called", "staffed"
            word = base
            break
    if word.endswith("e") and len(word) > 4 and not word.endswith("ee"):
        word = word[:-1]
    return word


# One thing written in ways that share no word: each way as its words (as search.words splits them: "sign-in"
# is "sign", "in"). A title saying any of them asks for items saying any of them. Not "sign on": single
# sign-on is a way of signing in, not every sign-in.
_SAME_THING: dict[str, tuple[tuple[str, ...], ...]] = {
    "login": tuple(tuple(way.split()) for way in (
        "login", "logins", "logon", "log in", "logs in", "logged in", "logging in",
        "signin", "signins", "sign in", "signs in", "signed in", "signing in",
    )),
}
# What to look each up by in the search: the shortest first words, which the others begin with ("log", "sign").
_SAME_THING_PREFIXES = {name: sorted(first for first in {way[0] for way in ways}
                                     if not any(first != other and first.startswith(other) for other, *_ in ways))
                        for name, ways in _SAME_THING.items()}


def _way_at(words: list[str], start: int) -> tuple[str, int] | None:
    """The thing of `_SAME_THING` written at words[start], and how many words it takes there."""
    for name, ways in _SAME_THING.items():
        for way in ways:
            if tuple(words[start:start + len(way)]) == way:
                return name, len(way)
    return None


def _ways_in(words: list[str], name: str) -> list[int]:
    """Where in `words` the thing `name` is written (the index of each way's first word)."""
    return [i for i in range(len(words)) if (found := _way_at(words, i)) is not None and found[0] == name]


def similar_words(title: str) -> list[str]:
    """The words of a title that say what it is about, folded by `_stem` ("Exporting" → "export"), which
    the search then matches as a word beginning; a thing written in several ways ("log in", "sign-in") is
    its one name ("login"). Empty when there is nothing to look up."""
    out: list[str] = []
    words = search.words(title)
    skip = 0
    for n, word in enumerate(words):
        if skip:
            skip -= 1
            continue
        way = _way_at(words, n)
        if way is not None:
            skip = way[1] - 1
            if way[0] not in out:
                out.append(way[0])
            continue
        stem = _stem(word)
        if len(word) < 2 or word in _STOP_WORDS:  # two letters can say a lot: "AI", "HR"; "notes" is "not"
            continue
        if stem not in out:
            out.append(stem)
    return out[:search.MAX_QUERY_WORDS]  # stop words do not use up the places


def _holds(text: str, word: str, *, typing: str | None = None) -> bool:
    """Whether `text` has `word` (a `_stem`): a word that folds to it, or the word with a usual ending;
    or any continuation of `typing`, the word as typed when it may still be being typed. (The search
    matches any word beginning: "sign" finds "signal".) A thing of `_SAME_THING` is held in any of its ways."""
    if word in _SAME_THING:
        return bool(_ways_in(search.words(text), word))
    for candidate in search.words(text):
        if (_stem(candidate) == word or (candidate.startswith(word) and candidate[len(word):] in _ENDINGS)
                or (typing and candidate.startswith(typing))):
            return True
    return False


def _search_prefix(word: str) -> str:
    """What to look a `_stem` up by: a beginning every word folding to it shares ("policy" is also
    "policies": "polic")."""
    return word[:-1] if word.endswith("y") and len(word) > 4 else word


def similar_items(session: Session, viewer: Viewer, *, title: str, limit: int = SIMILAR_LIMIT) -> list[Suggestion]:
    """Items this viewer may see that are about what a title is about, best first.

    Built on the search service (so visibility is `visible_items(viewer)`'s, and the matching the same on
    SQLite and PostgreSQL). Each word of the title is looked up on its own; an item scores the words it
    holds, each weighted by where it holds it (`_FOUND_IN`) and by how rare the word is among the items
    (a word most items share, like "shift" on a rota product, tells little), as a share of what holding
    every word in the title would score. Only items reaching `SIMILAR_THRESHOLD` are suggested. A word
    no item holds (a typo, a product not integrated yet: "sage", "login") counts as much as a word one item
    holds: "payroll export to sage" still finds the payroll exports (two of three words), but neither "AI
    rota" nor "login with google" is answered with every item sharing its other, commoner word. A title
    of one word asks for it in the item's title, or in its summary when no item has it in its title
    ("language" finds the item about right-to-left languages).
    """
    significant = similar_words(title)
    if not significant:
        return []
    # The title's last word may be half typed (suggestions come as people type): it may match any ending.
    typed = search.words(title)
    open_word = typed[-1] if typed and title[-1:].isalnum() else None
    total = search.count_visible(session, viewer)
    rarity: dict[str, float] = {}
    found: dict[int, Item] = {}
    placed: dict[int, dict[str, float]] = {}
    for word in significant:
        if word in _SAME_THING:
            # Looked up by each way's beginning ("log", "sign"); an item counts when it says one of the ways.
            hits = {hit.item.id: hit for prefix in _SAME_THING_PREFIXES[word]
                    for hit in search.search_items(session, viewer, prefix, limit=_SIMILAR_CANDIDATES)
                    if any(_holds(text, word) for text in (hit.item.title, hit.item.summary, hit.item.description))}
            holding = len(hits)
            candidates = list(hits.values())
        else:
            holding = search.count_matches(session, viewer, _search_prefix(word))
            candidates = []
        rarity[word] = math.log(1 + total / max(holding, 1))
        if not holding:
            continue
        typing = open_word if open_word is not None and _stem(open_word) == word else None
        if word not in _SAME_THING:
            candidates = search.search_items(session, viewer, _search_prefix(word), limit=_SIMILAR_CANDIDATES)
        for hit in candidates:
            found.setdefault(hit.item.id, hit.item)
            # Where the word itself stands: a title hit on a longer word ("signal" for "sign") counts as
            # a description mention.
            if _holds(hit.item.title, word, typing=typing):
                tier = search.Tier.title
            elif _holds(hit.item.summary, word, typing=typing):
                tier = search.Tier.heading
            else:
                tier = search.Tier.anywhere
            placed.setdefault(hit.item.id, {})[word] = _FOUND_IN[tier]
    if not found:
        return []
    whole = sum(rarity.values())
    score = {item_id: sum(rarity[w] * weight for w, weight in where.items()) / whole
             for item_id, where in placed.items()}
    # Equal matches: the more voted first, unless counts are hidden from this viewer (the order would
    # give them away); then in the search's own order.
    order = {item_id: n for n, item_id in enumerate(found)}
    votes_break_ties = portal.counts_shown(session, viewer)
    threshold = SIMILAR_THRESHOLD - 1e-6
    if len(significant) == 1 and max(score.values()) > SIMILAR_THRESHOLD:
        threshold = SIMILAR_THRESHOLD + 1e-6  # one word: in an item's title, when any item has it there
    ranked = sorted((item for item in found.values() if score[item.id] >= threshold), key=lambda item: (
        -round(score[item.id], 6), -item.vote_count if votes_break_ties else 0, order[item.id]))[:limit]
    return [Suggestion(item=item, title_html=_marked(item.title, significant, open_word)) for item in ranked]


def _marked(title: str, significant: list[str], open_word: str | None) -> Any:
    """The title with the words that matched marked whole ("Google", not the "Googl" it was looked up by)."""
    words = search.words(title)
    matched = [word for word in words
               if any(_holds(word, stem, typing=open_word if open_word and _stem(open_word) == stem else None)
                      for stem in significant if stem not in _SAME_THING)]
    for name in (stem for stem in significant if stem in _SAME_THING):
        # The way's own words, but not a little word like "in" (it would be marked wherever it stands).
        for start in _ways_in(words, name):
            found = _way_at(words, start)
            length = found[1] if found is not None else 1
            matched += [w for w in words[start:start + length] if w not in _STOP_WORDS]
    return search.highlight(title, matched)


# --- customers: what became of my feedback (/me) ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MyFeedback:
    feedback: Feedback
    # The item it is linked to, only when the author may see it; `linked_hidden` when they may not.
    item: Item | None
    linked_hidden: bool
    vote_withdrawn: bool = False  # a reason whose vote the person withdrew (kept for the team until deleted)

    @property
    def status(self) -> str:
        state = self.feedback.state
        if state is FeedbackState.declined:
            return "Declined"
        if state is FeedbackState.linked or self.feedback.item_id is not None:
            return "Linked to an item"
        if state is FeedbackState.archived:
            return "Read by the team"
        return "Received"


@dataclass(frozen=True, slots=True)
class RecordedVote:
    vote: Vote
    item: Item | None  # None when the person may not see the item (e.g. still a draft)
    captured_by: User | None
    closed_reason: str | None  # set when the item takes no votes any more: the vote stays as it was

    @property
    def importance(self) -> Importance:
        return Importance(self.vote.importance)

    @property
    def source_label(self) -> str:
        return SOURCE_LABELS.get(self.vote.source, "a conversation") if self.vote.source else "a conversation"


@dataclass(frozen=True, slots=True)
class MyFeedbackPage:
    feedback: list[MyFeedback]
    recorded_votes: list[RecordedVote]


def _visible_by_id(session: Session, viewer: Viewer, item_ids: set[int]) -> dict[int, Item]:
    if not item_ids:
        return {}
    rows = session.scalars(visible_items(viewer).where(Item.id.in_(item_ids))
                           .options(selectinload(Item.stage), selectinload(Item.product)))
    return {item.id: item for item in rows}


def my_feedback(session: Session, *, viewer: Viewer, limit: int = 100) -> MyFeedbackPage:
    """The viewer's own ideas and reasons (newest first), and the votes the team recorded for them."""
    user = viewer.user
    if user is None:
        return MyFeedbackPage(feedback=[], recorded_votes=[])
    rows = list(session.scalars(
        select(Feedback)
        .where(Feedback.author_id == user.id, Feedback.captured_by_id.is_(None),
               Feedback.kind.in_([FeedbackKind.idea, FeedbackKind.reason]))
        .order_by(Feedback.created_at.desc(), Feedback.id.desc()).limit(limit)
    ))
    captured_by = aliased(User)
    votes = list(session.execute(
        select(Vote, captured_by).outerjoin(captured_by, captured_by.id == Vote.captured_by_id)
        .where(Vote.user_id == user.id, Vote.captured_by_id.is_not(None))
        .order_by(Vote.created_at.desc(), Vote.id.desc()).limit(limit)
    ))
    visible = _visible_by_id(session, viewer, {f.item_id for f in rows if f.item_id} | {v.item_id for v, _ in votes})
    voted = _items_with_stage(session, {v.item_id for v, _ in votes})
    reason_items = {f.item_id for f in rows if f.kind is FeedbackKind.reason and f.item_id is not None}
    still_voted = set(session.scalars(select(Vote.item_id).where(Vote.user_id == user.id,
                                                                 Vote.item_id.in_(reason_items)))) if reason_items else set()
    return MyFeedbackPage(
        feedback=[MyFeedback(feedback=f, item=visible.get(f.item_id) if f.item_id else None,
                             linked_hidden=f.item_id is not None and f.item_id not in visible,
                             vote_withdrawn=f.kind is FeedbackKind.reason and f.item_id not in still_voted)
                  for f in rows],
        recorded_votes=[RecordedVote(vote=v, item=visible.get(v.item_id), captured_by=pm,
                                     closed_reason=voted[v.item_id].voting_closed_reason()) for v, pm in votes],
    )


def _items_with_stage(session: Session, item_ids: set[int]) -> dict[int, Item]:
    if not item_ids:
        return {}
    return {item.id: item for item in session.scalars(
        select(Item).where(Item.id.in_(item_ids)).options(selectinload(Item.stage)))}


def delete_own_reason(session: Session, *, viewer: Viewer, feedback_id: int | None) -> None:
    """Delete a "tell us why" reason the viewer gave (from /me): the team no longer reads it.

    Only its author can; anyone else, and anything that is not a reason, gets NotFound. The vote, if there
    still is one, stays as it is."""
    user = viewer.user
    if user is None or feedback_id is None:
        raise NotFound()
    reason = session.scalar(select(Feedback).where(Feedback.id == feedback_id, Feedback.author_id == user.id,
                                                   Feedback.kind == FeedbackKind.reason,
                                                   Feedback.captured_by_id.is_(None)))
    if reason is None:
        raise NotFound()
    session.delete(reason)
    session.flush()


def withdraw_recorded_vote(session: Session, *, viewer: Viewer, vote_id: int | None) -> Item | None:
    """Withdraw a vote the team recorded for the viewer. Returns the item if the viewer may see it.

    Only the person the vote belongs to can withdraw it; anyone else gets NotFound. Like any vote, it
    stays as it was once the item is closed (released, declined) or merged: Conflict.
    """
    user = viewer.user
    if user is None or vote_id is None:
        raise NotFound()
    vote = session.scalar(select(Vote).where(Vote.id == vote_id, Vote.user_id == user.id))
    if vote is None:
        raise NotFound()
    item = _items_with_stage(session, {vote.item_id})[vote.item_id]
    reason = item.voting_closed_reason()
    if reason is not None:
        raise Conflict(f"{reason}. Votes on it stay as they were.")
    voting.withdraw_vote(session, item=item, user=user)
    return _visible_by_id(session, viewer, {item.id}).get(item.id)


# --- staff: the inbox ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class InboxFilters:
    state: FeedbackState | None = None
    kind: FeedbackKind | None = None
    product: int | None = None
    organisation: int | None = None

    @classmethod
    def parse(cls, *, state: str = "", kind: str = "", product: str = "", organisation: str = "") -> InboxFilters:
        def enum(enum_cls: Any, value: str) -> Any:
            try:
                return enum_cls(value) if value else None
            except ValueError:
                return None

        return cls(state=enum(FeedbackState, state), kind=enum(FeedbackKind, kind),
                   product=parse_id(product), organisation=parse_id(organisation))

    @property
    def active(self) -> bool:
        return any(v is not None for v in (self.state, self.kind, self.product, self.organisation))


@dataclass(frozen=True, slots=True)
class InboxEntry:
    feedback: Feedback
    author: User | None
    organisation: Organisation | None
    segment: Segment | None
    captured_by: User | None
    item: Item | None
    product: Product | None
    # The importance of the author's vote on the attached item, as it stands now (None: no vote there).
    importance: Importance | None = None

    @property
    def vote_withdrawn(self) -> bool:
        """What came with a vote that the person has since withdrawn: their own "tell us why" reason, or a note
        the team captured with the vote it recorded for them. The team keeps what they said."""
        if self.importance is not None:
            return False
        fb = self.feedback
        captured_note = fb.kind is FeedbackKind.note and fb.captured_by_id is not None and fb.item_id is not None
        return fb.kind is FeedbackKind.reason or captured_note

    @property
    def source_name(self) -> str:
        if self.feedback.source:
            return SOURCE_NAMES[self.feedback.source]
        return "Portal"


_Author, _CapturedBy = aliased(User, name="author"), aliased(User, name="captured_by")
_ItemProduct, _OwnProduct = aliased(Product, name="item_product"), aliased(Product, name="own_product")


def _inbox_query() -> Select[Feedback, User, Organisation, Segment, User, Item, Product, Product, int]:
    return (
        select(Feedback, _Author, Organisation, Segment, _CapturedBy, Item, _ItemProduct, _OwnProduct,
               Vote.importance)
        .outerjoin(_Author, _Author.id == Feedback.author_id)
        .outerjoin(Organisation, Organisation.id == Feedback.organisation_id)
        .outerjoin(Segment, Segment.id == Organisation.segment_id)
        .outerjoin(_CapturedBy, _CapturedBy.id == Feedback.captured_by_id)
        .outerjoin(Item, Item.id == Feedback.item_id)
        .outerjoin(_ItemProduct, _ItemProduct.id == Item.product_id)
        .outerjoin(_OwnProduct, _OwnProduct.id == Feedback.product_id)
        # At most one row: one vote per person per item (the unique key).
        .outerjoin(Vote, (Vote.item_id == Feedback.item_id) & (Vote.user_id == Feedback.author_id))
    )


def _entry(row: Any) -> InboxEntry:
    feedback, author, organisation, segment, captured_by, item, item_product, own_product, importance = row
    return InboxEntry(feedback=feedback, author=author, organisation=organisation, segment=segment,
                      captured_by=captured_by, item=item, product=item_product or own_product,
                      importance=Importance(importance) if importance is not None else None)


def list_inbox(session: Session, *, filters: InboxFilters, page: int = 1,
               per_page: int = INBOX_PER_PAGE) -> tuple[list[InboxEntry], int]:
    """All private feedback and ideas, newest first, in one query per page."""
    stmt = _inbox_query()
    if filters.state is not None:
        stmt = stmt.where(Feedback.state == filters.state)
    if filters.kind is not None:
        stmt = stmt.where(Feedback.kind == filters.kind)
    if filters.product is not None:
        # An item's product wins over the one the author picked.
        stmt = stmt.where(func.coalesce(Item.product_id, Feedback.product_id) == filters.product)
    if filters.organisation is not None:
        stmt = stmt.where(Feedback.organisation_id == filters.organisation)
    total = session.scalar(stmt.with_only_columns(func.count(), maintain_column_froms=True).order_by(None)) or 0
    rows = session.execute(stmt.order_by(Feedback.created_at.desc(), Feedback.id.desc())
                           .offset((page - 1) * per_page).limit(per_page))
    return [_entry(row) for row in rows], total


def count_new(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(Feedback).where(Feedback.state == FeedbackState.new)) or 0


def get_entry(session: Session, feedback_id: int) -> InboxEntry:
    row = session.execute(_inbox_query().where(Feedback.id == feedback_id)).first()
    if row is None:
        raise NotFound()
    return _entry(row)


def list_feedback_from(session: Session, *, author: User, limit: int = 100) -> tuple[list[InboxEntry], int]:
    """A person's ideas, reasons and the notes captured for them, newest first; and how many in all."""
    total = session.scalar(select(func.count()).select_from(Feedback).where(Feedback.author_id == author.id)) or 0
    rows = session.execute(_inbox_query().where(Feedback.author_id == author.id)
                           .order_by(Feedback.created_at.desc(), Feedback.id.desc()).limit(limit))
    return [_entry(row) for row in rows], total


def list_feedback_for_item(session: Session, *, item: Item, limit: int = 20) -> list[InboxEntry]:
    """The private feedback attached to an item (for staff pages), newest first."""
    rows = session.execute(_inbox_query().where(Feedback.item_id == item.id)
                           .order_by(Feedback.created_at.desc(), Feedback.id.desc()).limit(limit))
    return [_entry(row) for row in rows]


def _label(feedback: Feedback) -> str:
    text = feedback.title or " ".join(feedback.body.split())
    return (text[:80] + "…") if len(text) > 80 else text or f"Feedback #{feedback.id}"


def _set_state(session: Session, *, feedback: Feedback, state: FeedbackState, actor: User, action: AuditAction,
               extra: dict[str, list[Any]] | None = None) -> None:
    before = feedback.state
    feedback.state = state
    feedback.updated_at = utcnow()
    session.flush()
    changes = {"state": [before.value, state.value], **(extra or {})}
    audit.record(session, actor=actor, action=action, entity=feedback, label=_label(feedback), changes=changes)


def link_to_item(session: Session, *, feedback: Feedback, item: Item, actor: User) -> None:
    """Attach feedback to an item (any item: staff may link to drafts and internal items)."""
    if feedback.item_id == item.id and feedback.state is FeedbackState.linked:
        return
    before = feedback.item_id
    feedback.item_id = item.id
    _set_state(session, feedback=feedback, state=FeedbackState.linked, actor=actor, action=AuditAction.feedback_linked,
               extra={"item": [before, item.public_id]})


class FeedbackDecline(FormModel):
    """Why the team declines an idea."""

    decline_reason: Annotated[str, text(MAX_REASON, required="Say why, in a sentence or two: the author reads it.")] = ""


def decline(session: Session, *, feedback: Feedback, reason: str, actor: User) -> None:
    """Decline an idea with a reason its author reads on /me (`reason`: as FeedbackDecline validated it)."""
    feedback.decline_reason = reason
    _set_state(session, feedback=feedback, state=FeedbackState.declined, actor=actor, action=AuditAction.feedback_declined,
               extra={"decline_reason": ["", reason]})


def archive(session: Session, *, feedback: Feedback, actor: User) -> None:
    if feedback.state is FeedbackState.archived:
        return
    _set_state(session, feedback=feedback, state=FeedbackState.archived, actor=actor, action=AuditAction.feedback_archived)


def reopen(session: Session, *, feedback: Feedback, actor: User) -> None:
    """Back to the triage queue (or to linked, when it is attached to an item)."""
    state = FeedbackState.linked if feedback.item_id is not None else FeedbackState.new
    if feedback.state is state:
        return
    if feedback.state is FeedbackState.declined:
        feedback.decline_reason = ""
    _set_state(session, feedback=feedback, state=state, actor=actor, action=AuditAction.feedback_reopened)


def draft_stage(session: Session) -> Stage | None:
    """Where an item made from an idea starts: the first open stage (Under consideration)."""
    return next((s for s in roadmap.list_stages(session) if not s.is_closed and not s.is_released), None)


def idea_item_form(session: Session, feedback: Feedback) -> dict[str, str]:
    """The item form prefilled from an idea."""
    stage = draft_stage(session)
    products = roadmap.list_products(session)
    product_id = feedback.product_id or (products[0].id if len(products) == 1 else None)
    return {"title": feedback.title, "description": feedback.body, "product_id": str(product_id or ""),
            "stage_id": str(stage.id) if stage else ""}


def create_item_from_idea(session: Session, *, feedback: Feedback, form: Mapping[str, Any], actor: User) -> Item:
    """Turn an idea into a DRAFT item; the idea becomes linked and its author's vote comes along."""
    if feedback.kind is not FeedbackKind.idea:
        raise Conflict("Only ideas can be turned into items; link this feedback to an item instead.")
    if feedback.item_id is not None:
        raise Conflict("This idea is already linked to an item.")
    data = roadmap.resolve_item(session, validate_form(roadmap.ItemCreate, {
        "title": form.get("title") or "", "description": form.get("description") or "",
        "product_id": form.get("product_id") or "", "stage_id": form.get("stage_id") or "",
    }))
    item = roadmap.create_item(session, data=data, author=actor, publish=False)
    author = session.get(User, feedback.author_id) if feedback.author_id else None
    if author is not None and author.deleted_at is None:
        voting.cast_vote(session, item=item, user=author, importance=Importance.important)
    link_to_item(session, feedback=feedback, item=item, actor=actor)
    return item


# --- staff: votes captured on a customer's behalf ----------------------------------------------------------


NEW_CONTACT = "contact"  # the `customer` choice for someone without an account yet


@dataclass(frozen=True, slots=True)
class CaptureInput:
    customer: User | None
    contact_name: str
    contact_email: str
    organisation: Organisation | None
    importance: Importance
    source: CaptureSource
    source_url: str
    note: str


def _valid_url(value: str) -> bool:
    try:
        parts = urlsplit(value)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.netloc) and not re.search(r"\s", value)


def _importance(value: Any) -> Importance:
    try:
        return Importance(parse_int(value) or 0)  # 0 (also for no number): refused
    except ValueError:
        raise refuse("Choose how much it matters: nice to have, important or critical.") from None


def _customer(value: Any) -> int | str:
    if parse_id(value) is not None:
        return cast(int, parse_id(value))
    if value == NEW_CONTACT:
        return NEW_CONTACT
    raise refuse("Choose a customer from the search, or a new contact.")


class VoteCapture(FormModel):
    """The "vote on behalf" form. `customer` is the id of a customer chosen from the search, or NEW_CONTACT
    for someone without an account yet (then `contact_name`, `contact_email` and `organisation_id` describe
    them, and are ignored otherwise)."""

    customer: Annotated[int | str, BeforeValidator(_customer)] = ""
    contact_name: Annotated[str, text(MAX_NAME)] = ""
    contact_email: Annotated[str, text(320)] = ""
    organisation_id: Annotated[int | None, whole_number("Choose the contact's organisation.", required=False)] = None
    importance: Annotated[Importance, BeforeValidator(_importance)] = Importance.important
    source: Annotated[CaptureSource, choice(CaptureSource, "Choose where this came from: a call, a ticket, a "
                                                           "meeting or an email.")] = CaptureSource.call
    source_url: Annotated[str, text(MAX_URL)] = ""
    note: Annotated[str, text(MAX_BODY)] = ""

    @field_validator("contact_name", "contact_email", "organisation_id", mode="before")
    @classmethod
    def _only_for_a_new_contact(cls, value: Any, info: ValidationInfo) -> Any:
        return value if info.data.get("customer") == NEW_CONTACT else ""

    @field_validator("contact_name")
    @classmethod
    def _contact_name(cls, value: str, info: ValidationInfo) -> str:
        if info.data.get("customer") == NEW_CONTACT and not value:
            raise refuse("Enter the contact's name.")
        return value

    @field_validator("contact_email")
    @classmethod
    def _contact_email(cls, value: str, info: ValidationInfo) -> str:
        if info.data.get("customer") != NEW_CONTACT:
            return value
        if not value:
            raise refuse("Enter the contact's email address.")
        try:
            return validate_email(value)
        except FormInvalid:
            raise refuse("Enter a valid email address, like name@example.com.") from None

    @field_validator("organisation_id")
    @classmethod
    def _organisation(cls, value: int | None, info: ValidationInfo) -> int | None:
        if info.data.get("customer") == NEW_CONTACT and value is None:
            raise refuse("Choose the contact's organisation.")
        return value

    @field_validator("source_url")
    @classmethod
    def _source_url(cls, value: str) -> str:
        if value and not _valid_url(value):
            raise refuse("Enter a web address starting with https:// (or leave it empty).")
        return value


def resolve_capture(session: Session, data: VoteCapture) -> CaptureInput:
    """The customer or the organisation a validated capture form names; FormInvalid when gone."""
    errors: dict[str, str] = {}
    customer = organisation = None
    if isinstance(data.customer, int):
        customer = session.scalar(select(User).where(User.id == data.customer, User.role == Role.customer,
                                                     User.deleted_at.is_(None)))
        if customer is None:
            errors["customer"] = "That customer no longer exists; search again and choose them."
    elif data.customer == NEW_CONTACT and data.organisation_id is not None:
        organisation = session.get(Organisation, data.organisation_id)
        if organisation is None:
            errors["organisation_id"] = "Choose the contact's organisation."
    if errors:
        raise FormInvalid(errors)
    return CaptureInput(customer=customer, contact_name=data.contact_name, contact_email=data.contact_email,
                        organisation=organisation, importance=data.importance, source=data.source,
                        source_url=data.source_url, note=data.note)


def parse_capture_form(session: Session, form: Mapping[str, Any]) -> CaptureInput:
    """A capture from plain values (tests): the form's model, then the database."""
    return resolve_capture(session, validate_form(VoteCapture, form))


@dataclass(frozen=True, slots=True)
class CaptureResult:
    customer: User
    placeholder_created: bool
    vote_created: bool
    importance: Importance
    note: Feedback | None


def _contact(session: Session, *, data: CaptureInput, actor: User) -> tuple[User, bool]:
    """The person behind a contact: their account if the email has one, else a new placeholder."""
    existing = accounts.get_user_by_email(session, data.contact_email)
    if existing is not None:
        if existing.deleted_at is not None or not existing.is_active:
            raise FormInvalid({"contact_email": "This address belongs to a disabled account."})
        if existing.role is not Role.customer:
            raise FormInvalid({"contact_email": "This address belongs to a staff account."})
        return existing, False
    user = accounts.create_user(session, email=data.contact_email, role=Role.customer,
                                display_name=data.contact_name)
    assert data.organisation is not None
    user.organisation_id = data.organisation.id
    user.is_placeholder = True
    session.flush()
    audit.record(session, actor=actor, action=AuditAction.user_placeholder_created, entity=user,
                 changes={"organisation": [None, data.organisation.name], "display_name": [None, user.display_name]})
    return user, True


def capture_vote(session: Session, *, item: Item, data: CaptureInput, actor: User) -> CaptureResult:
    """Record a customer's vote (and optionally a note) heard by a PM; it counts like any vote.

    One vote per person per item. A person who voted themselves keeps their own vote and reason as they
    are: the capture is refused (nothing recorded, the note included), so the PM hears it and the demand page
    never shows a PM's note as the customer's reason. Over a vote captured before, the higher importance wins.
    The vote and the note keep who captured them and from where.
    """
    # Every rule on the item's row as it is once locked, as app/voting/commands.py checks a person's own vote:
    # the page was read before, and a stage move (released, declined) or a merge may have committed since.
    item = voting.lock_item_again(session, item)
    if not takes_votes(item):
        raise Conflict(f"{item.voting_closed_reason()}. This item takes no votes.")
    if data.customer is not None:
        customer, created = data.customer, False
    else:
        customer, created = _contact(session, data=data, actor=actor)
    own = voting.own_vote(session, item=item, user=customer) if not created else None
    if own is not None:
        raise Conflict(f"{customer.name} already voted on this item themselves ({own.label}): their own vote and "
                       "reason stand, so nothing was recorded. What you typed is still in the form.")
    result = voting.cast_vote(session, item=item, user=customer, importance=data.importance, captured_by=actor,
                              source=data.source, source_url=data.source_url, keep_higher=True)
    note = None
    if data.note:
        now = utcnow()
        note = Feedback(kind=FeedbackKind.note, state=FeedbackState.linked, author_id=customer.id,
                        organisation_id=customer.organisation_id, item_id=item.id, product_id=item.product_id,
                        body=data.note, captured_by_id=actor.id, source=data.source, source_url=data.source_url,
                        created_at=now, updated_at=now)
        session.add(note)
        session.flush()
        _emit_feedback(session, note, author=customer, item=item, captured_by=actor)
    audit.record(session, actor=actor, action=AuditAction.vote_captured, entity=item, changes={
        "customer": [None, customer.email], "importance": [None, result.importance.label],
        "source": [None, data.source.value], "source_url": [None, data.source_url or None],
        "note": [None, bool(note)],
    })
    return CaptureResult(customer=customer, placeholder_created=created, vote_created=result.created,
                         importance=result.importance, note=note)


CUSTOMERS_SHOWN = 10


def find_customers(session: Session, *, q: str, limit: int = CUSTOMERS_SHOWN) -> tuple[list[User], int]:
    """The first `limit` customers whose email or name contains the words (for choosing whom a vote is
    captured for), and how many match in all."""
    if not q.strip():
        return [], 0
    return organisations.list_customers(session, q=q, per_page=limit)


def current_vote(session: Session, *, item: Item, user: User) -> Importance | None:
    return voting.votes_of(session, user=user, item_ids=[item.id]).get(item.id)


# --- merging: feedback moves to another item, and back ----------------------------------------------------
# app/roadmap/merge.py calls these with both items' rows locked.


def count_feedback(session: Session, *, item: Item) -> int:
    return session.scalar(select(func.count()).select_from(Feedback).where(Feedback.item_id == item.id)) or 0


def move_feedback_to_item(session: Session, *, source: Item, target: Item) -> list[int]:
    """Source's feedback is linked to target instead; returns the ids of the rows that moved.

    One reason per person and item: a reason on source whose author gave one on target too stays on source
    (with it, back on undo); target keeps the reason that goes with the vote target keeps."""
    on_a = aliased(Feedback)
    reason_on_a = (select(on_a.id).where(on_a.item_id == target.id, on_a.kind == FeedbackKind.reason,
                                          on_a.author_id == Feedback.author_id).exists())
    return list(session.scalars(
        update(Feedback).where(Feedback.item_id == source.id,
                               ~and_(Feedback.kind == FeedbackKind.reason, reason_on_a))
        .values(item_id=target.id).returning(Feedback.id).execution_options(synchronize_session=False)
    ))


def move_feedback_back(session: Session, ids: list[int], *, source: Item, target: Item) -> None:
    """Undo `move_feedback_to_item` for the rows still linked to target."""
    for chunk in in_chunks(ids):
        session.execute(update(Feedback).where(Feedback.id.in_(chunk), Feedback.item_id == target.id)
                        .values(item_id=source.id).execution_options(synchronize_session=False))
