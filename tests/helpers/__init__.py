"""Helpers the tests import by name. The conftest.py files hold fixtures and hooks only, so a helper is
found where its import says, and a test module never reaches into a conftest (or another test module)."""
