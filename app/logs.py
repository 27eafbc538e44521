"""The portal's own log lines (loggers under `ahead`) reach standard error with time, level and logger.

uvicorn configures only its own loggers, so without this nothing below WARNING of ours was written, and
what was written came through Python's last-resort handler with neither a time nor the logger's name:
the refusals and warnings SECURITY.md promises to the operator would have been lost. A host that
configures logging itself (a handler on the root logger or on `ahead`) keeps its own configuration.
"""

from __future__ import annotations

import logging
import sys

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure() -> None:
    ours = logging.getLogger("ahead")
    if logging.getLogger().handlers or ours.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT))
    ours.addHandler(handler)
    if ours.level == logging.NOTSET:
        ours.setLevel(logging.INFO)
