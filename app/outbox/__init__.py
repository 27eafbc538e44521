"""The transactional outbox: email and other deliveries written in the transaction of the change that causes
them, and carried out afterwards by a worker (docs/architecture.md, "Delivery").

`from app import outbox` gives what a domain needs to take part: `@outbox.handler("kind")` and the exceptions a
handler raises (`Retry`, `Failed`). Enqueueing is app.outbox.service; the worker is app.outbox.worker.
"""

from app.outbox.registry import EMAIL_SCHEDULE, THREE_DAYS_SCHEDULE, Failed, Job, Retry, handler

__all__ = ["EMAIL_SCHEDULE", "THREE_DAYS_SCHEDULE", "Failed", "Job", "Retry", "handler"]
