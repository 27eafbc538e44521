"""Helpers for the staff-area tests."""

from __future__ import annotations

PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489"
    "0000000d49444154789c6360f8cfc0f01f0005000201a5f0b1e90000000049454e44ae426082"
)
WEBP = b"RIFF\x1a\x00\x00\x00WEBPVP8L\x0d\x00\x00\x00/\x00\x00\x00\x10\x07\x10\x11\x11\x88\x88\xfe\x07\x00"


def branding_form(**overrides: str) -> dict[str, str]:
    return {"portal_name": "Acme Roadmap", "accent_color": "#ff5500", "accent_picker": "#4f46e5",
            "product_name": "Open Acme", "product_url": "https://app.acme.example/", **overrides}


def item_form(product, stage_slug_or_stage, **overrides):  # type: ignore[no-untyped-def]
    """The item editor's fields for a valid item of `product` in that stage; overrides change some."""
    the_stage = stage_slug_or_stage
    data = {
        "title": "Scheduled exports to S3",
        "summary": "Send the weekly report to your own bucket.",
        "description": "Exports run **every Monday**.",
        "product_id": str(product.id),
        "stage_id": str(the_stage.id),
        "timeframe": "next",
        "confidence": "",
        "visibility": "public",
        "release_notes": "",
        "internal_notes": "",
    }
    data.update(overrides)
    return data
