"""What the staff area's forms may carry: generous bounds shared by every area's routes; the services give
the friendly per-field messages."""

from __future__ import annotations

from typing import Annotated

from fastapi import Form

Name = Annotated[str, Form(max_length=1000)]
LongText = Annotated[str, Form(max_length=20_000)]
Flag = Annotated[str, Form(max_length=10)]
