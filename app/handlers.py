"""The outbox's handlers: importing this module registers every domain's (app/outbox/registry.py).

The web app and the `ahead` commands call `load()` before a worker starts, so a worker knows every kind of
job any part of the app enqueues. A domain that enqueues a kind of its own adds its handler module here.
Email jobs ("email") are the outbox's own (app/outbox/mailer.py).
"""

from __future__ import annotations

from app.desk import service as _desk  # noqa: F401 # desk_refactor: a new revenue factor summed again
from app.notify import changelog as _changelog_mail  # noqa: F401 # changelog.mail
from app.notify import service as _notify  # noqa: F401 # notify.fan_out, notify.digest
from app.outbox import worker as _worker  # noqa: F401 # the email kind and the wake-up on commit
from app.webhooks import delivery as _webhooks  # noqa: F401 # the webhook kind


def load() -> None:
    """Nothing to do at call time: importing this module registered the handlers."""
