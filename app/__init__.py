"""Ahead: a self-hosted product roadmap portal with feature voting."""
