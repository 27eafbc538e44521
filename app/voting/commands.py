"""A person's vote as one command, shared by the vote form, the JSON fetch and the API.

A vote may carry a private "tell us why" note, which is feedback for the product team: the command writes
both, the vote through voting.service and the note through feedback.service. It sits above the two
services so that neither imports the other (feedback.service casts votes when staff capture one).
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from app.accounts.viewer import Viewer
from app.feedback import service as feedback
from app.roadmap.models import Item
from app.voting import service as voting
from app.voting.models import Importance


def vote(session: Session, *, viewer: Viewer, item: Item, importance: Importance, reason: str = "") -> voting.VoteResult:
    """A signed-in person's vote (or new importance), with an optional private "tell us why" note.

    The caller has loaded `item` through `visible_items(viewer)` (a hidden item is a 404 before this).
    Closed and merged items refuse with Conflict; a too-long note with FormInvalid({"reason": ...}).
    """
    user = voting.require_voter(viewer)
    voting.ensure_open(item)
    if reason and reason.strip():
        feedback.add_reason(session, item=item, author=user, body=reason)
    return voting.cast_vote(session, item=item, user=user, importance=importance)
