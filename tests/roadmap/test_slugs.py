"""An item's address spells its title in ASCII words (found by a walk-through: "Straße" was "strae")."""

from __future__ import annotations

import pytest

from app.roadmap.service import slugify
from tests.factories import make_item


@pytest.mark.parametrize(("title", "slug"), [
    ("Dark mode", "dark-mode"),
    ("Résumé parsing", "resume-parsing"),
    ("Straße names", "strasse-names"),
    ("ﬁle uploads", "file-uploads"),
    ("Æble, Øre and Œuvre", "aeble-ore-and-oeuvre"),
    ("Łódź office", "lodz-office"),
    ("C++ & Go: 2027 Q1!", "c-go-2027-q1"),
    ("日本語", ""),
])
def test_a_title_becomes_ascii_words(title, slug):
    assert slugify(title) == slug


async def test_an_item_page_lives_at_its_spelled_out_address(client, session):
    item = make_item(session, title="Straße für Ærø")
    assert item.path.endswith("/strasse-fur-aero")
    response = await client.get(item.path)
    assert response.status_code == 200
