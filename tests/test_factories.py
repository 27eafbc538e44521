"""The factories' promises that the rest of the suite leans on."""

from __future__ import annotations

import pytest

from app.accounts import passwords
from tests.factories import PASSWORD, PASSWORD_HASH, make_admin, make_pm, make_user


def test_the_precomputed_hash_is_the_test_password_under_todays_argon2_parameters():
    """Otherwise every password sign-in in the suite fails, or quietly rehashes (and writes) on the way."""
    fresh = passwords.hash_password_blocking(PASSWORD)
    assert passwords.verify_password_blocking(PASSWORD_HASH, PASSWORD), f"paste into tests/factories.py: {fresh}"
    assert not passwords.needs_rehash(PASSWORD_HASH), f"paste into tests/factories.py: {fresh}"
    assert PASSWORD_HASH.split("$")[:4] == fresh.split("$")[:4]  # same algorithm, version and parameters


def test_making_users_hashes_no_password(session, monkeypatch: pytest.MonkeyPatch):
    def refuse(password: str) -> str:
        raise AssertionError("a factory hashed a password")

    monkeypatch.setattr(passwords, "hash_password_blocking", refuse)
    users = [make_user(session), make_pm(session), make_admin(session), make_user(session, password=PASSWORD)]
    assert [user.password_hash for user in users] == [PASSWORD_HASH] * 4
    assert make_user(session, password=None).password_hash is None
