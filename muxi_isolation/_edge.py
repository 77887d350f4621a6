"""The server's outer middlewares that decide whether a request is answered at all: a
deadline per request (``Deadline``) and the per-user rate limit (``RateLimit``)."""

from __future__ import annotations

import asyncio
import logging

from ._asgi_types import ASGIApp, Receive, Send
from ._asgi_types import Message as ASGIMessage
from ._asgi_types import Scope as ASGIScope
from .errors import DeadlineExceeded, QuotaExceeded
from .http import RETRY_AFTER, SCOPE_KEY, error_response, send_json
from .outages import OutageLog
from .quotas import RateLimiter
from .scope import Scope

__all__ = ["Deadline", "RateLimit"]

log = logging.getLogger("muxi_isolation.server")  # the server's logger, as before the split


class Deadline:
    """Answer 503 ``deadline_exceeded`` (with ``Retry-After``) when a request has not started
    its answer within ``timeout`` seconds, without waiting for it: the handler is cancelled,
    and its clean-up (which may wait on a frozen database) goes on alone. Its transaction
    never committed, so it is rolled back; the backend's ``statement_timeout`` makes the
    database stop the work too. Also tells ``outages`` of every answer below 500."""

    def __init__(self, app: ASGIApp, timeout: float | None, outages: OutageLog) -> None:
        self.app, self.timeout, self.outages = app, timeout, outages

    async def __call__(self, scope: ASGIScope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = {"status": 0, "answered": False}

        async def tracked(message: ASGIMessage) -> None:
            if state["answered"]:
                return  # we already answered for it
            if message["type"] == "http.response.start":
                state["status"] = message["status"]
            await send(message)

        task = asyncio.ensure_future(self.app(scope, receive, tracked))
        task.add_done_callback(_retrieved)
        done, _ = await asyncio.wait({task}, timeout=self.timeout)
        if task in done or state["status"]:  # finished, or its answer is on its way
            await task
            if 0 < int(state["status"]) < 500:
                self.outages.succeeded()
            return
        state["answered"] = True
        task.cancel()
        exc = DeadlineExceeded(f"no answer within {self.timeout} s")
        self.outages.failed(exc)
        status, body = error_response(exc)
        await send_json(send, status, body, [(b"retry-after", RETRY_AFTER.encode())])


def _retrieved(task: asyncio.Future[None]) -> None:
    """A handler cancelled at its deadline may still fail while cleaning up: seen here."""
    if not task.cancelled() and task.exception() is not None:
        log.debug("a request past its deadline failed afterwards", exc_info=task.exception())


class RateLimit:
    """``requests_per_minute`` per (tenant, user) on the user routes: 429 ``quota_exceeded``
    with ``Retry-After``. Inside the isolation middleware (it reads the resolved scope);
    admin endpoints and public paths are not counted. The buckets live in this process."""

    def __init__(self, app: ASGIApp, limiter: RateLimiter, admin_paths: tuple[str, ...]) -> None:
        self.app, self.limiter, self.admin_paths = app, limiter, admin_paths

    async def __call__(self, scope: ASGIScope, receive: Receive, send: Send) -> None:
        user = scope.get(SCOPE_KEY)
        path = str(scope.get("path", ""))
        if isinstance(user, Scope) and not path.startswith(self.admin_paths):
            try:
                self.limiter.take(user.tenant_id, user.user_id)
            except QuotaExceeded as exc:
                wait = str(exc.retry_after or 1).encode()
                await send_json(send, *error_response(exc), [(b"retry-after", wait)])
                return
        await self.app(scope, receive, send)
