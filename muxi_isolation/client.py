"""An HTTP client shaped like the seed's SDK (needs only ``httpx``: the ``client`` extra).

    formation = Formation("http://localhost:8001", client_key="fmc_...")
    session = formation.create_session(user_id="user_123")
    response = formation.chat("Hello", session_id=session.id, user_id="user_123")
    print(response)                       # the agent's answer

``AsyncFormation`` is the same with ``await``. Errors come back as the library's typed
exceptions (``SessionNotFound``, ``Forbidden``, ...), rebuilt from the server's JSON
``error`` code, so code written against ``Isolation`` catches the same classes.
Every method is written once in ``_FormationBase``, as a plan; only the request itself
(``_request`` / ``_arequest``) and the wait between retries differ.

Retries: a 503 (the server's storage is out, or a request ran past its deadline) is retried
``retries`` times with exponential backoff (or the server's ``Retry-After``). Creating a
session and a chat turn carry an ``Idempotency-Key`` that stays the same across the retries
of one call, so a retry of a request that was stored after all writes nothing twice; those
two, and reads, are also retried when the connection fails.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, ClassVar, Concatenate, Generic, ParamSpec, TypeVar, overload
from urllib.parse import quote

from ._closing import Closing
from .errors import (
    AdapterUnavailable,
    DuplicateRequest,
    InvalidFilter,
    InvalidIdentifier,
    InvalidInput,
    IsolationError,
    KeyReused,
    QuotaExceeded,
    SessionExists,
    SessionExpired,
    SessionNotFound,
)
from .http import ERROR_STATUS
from .plans import Plan, step, twins

try:
    import httpx
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise AdapterUnavailable("httpx", "client") from exc

__all__ = [
    "AsyncFormation",
    "ChatMessage",
    "ChatResponse",
    "Formation",
    "Session",
    "SessionHistory",
    "raise_for_error",
]

T = TypeVar("T")
P = ParamSpec("P")
H = TypeVar("H", httpx.Client, httpx.AsyncClient)
X = TypeVar("X", httpx.BaseTransport, httpx.AsyncBaseTransport)
DEFAULT_URL = "http://localhost:8001"


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(timezone.utc)


@dataclass(frozen=True)
class Session:
    id: str
    user_id: str
    created_at: datetime | None
    last_active_at: datetime | None = None
    expires_at: datetime | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Session:
        return cls(
            data["id"],
            data["user_id"],
            _time(data.get("created_at")),
            _time(data.get("last_active_at")),
            _time(data.get("expires_at")),
        )


@dataclass(frozen=True)
class ChatMessage:
    role: str
    content: Any
    seq: int | None = None
    created_at: datetime | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ChatMessage:
        return cls(
            data["role"],
            data["content"],
            data.get("seq"),
            _time(data.get("created_at")),
            dict(data.get("metadata") or {}),
        )


@dataclass(frozen=True)
class SessionHistory:
    session: Session
    messages: list[ChatMessage]


@dataclass(frozen=True)
class ChatResponse:
    """The agent's answer; ``str(response)`` is its text."""

    response: str
    session_id: str
    user_id: str

    def __str__(self) -> str:
        return self.response


_Make = Callable[[dict[str, Any]], IsolationError]


def _session_error(cls: Callable[[str], IsolationError]) -> _Make:
    return lambda body: cls(str(body.get("session_id", "")))


def _identifier(body: dict[str, Any]) -> IsolationError:
    rule = str(body.get("rule", body["message"]))
    return InvalidIdentifier(str(body.get("field", "user_id")), rule)


def _input(body: dict[str, Any]) -> IsolationError:
    named = body.get("field")
    return InvalidInput(str(body["message"]), field=named if isinstance(named, str) else None)


def _quota(body: dict[str, Any]) -> IsolationError:
    allowed, wait = body.get("allowed"), body.get("retry_after")
    return QuotaExceeded(
        str(body.get("limit", "")),
        allowed if isinstance(allowed, int) else 0,
        retry_after=wait if isinstance(wait, int) else None,
    )


def _plain(cls: type[IsolationError]) -> _Make:
    return lambda body: cls(body["message"])


# The server's own table, read backwards: every error whose constructor takes the message,
# plus those that carry their details in other fields.
_ERRORS: dict[str, _Make] = {
    code: _plain(cls)
    for cls, (_, code) in ERROR_STATUS.items()
    if not any("__init__" in vars(c) for c in cls.__mro__ if issubclass(c, IsolationError))
}
_ERRORS.update(
    {
        "session_not_found": _session_error(SessionNotFound),
        "session_expired": _session_error(SessionExpired),
        "session_exists": _session_error(SessionExists),
        "invalid_input": _input,
        "invalid_filter": lambda body: InvalidFilter(str(body["message"])),
        "idempotency_key_reused": lambda body: KeyReused(str(body.get("key", ""))),
        "duplicate_request": lambda body: DuplicateRequest(str(body.get("key", ""))),
        "quota_exceeded": _quota,
        "invalid_identifier": _identifier,
        "invalid_user_id": _identifier,
        "missing_user_id": _identifier,
    }
)


def raise_for_error(response: httpx.Response) -> None:
    """Raise the typed error a non-2xx response carries (``IsolationError`` if unknown)."""
    if response.is_success:
        return
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict) or not isinstance(body.get("error"), str):
        raise IsolationError(f"HTTP {response.status_code}: {response.text[:200]}")
    body.setdefault("message", "")
    make = _ERRORS.get(body["error"])
    if make is None:
        raise IsolationError(f"HTTP {response.status_code} {body['error']}: {body['message']}")
    raise make(body)


@dataclass(frozen=True)
class _Call(Generic[T]):
    """One request, built without I/O, and how to read its answer."""

    method: str
    url: str
    headers: list[tuple[bytes, bytes]]
    parse: Callable[[httpx.Response], T]
    json: Any = None
    key: str | None = None  # the Idempotency-Key, the same for every retry of the call

    @property
    def safe_to_resend(self) -> bool:
        """Whether a request that may have reached the server can be sent again."""
        return self.key is not None or self.method == "GET"


def _json(response: httpx.Response) -> Any:
    return response.json()


_asleep: Callable[[float], Awaitable[None]] = asyncio.sleep


class _Endpoint(Generic[P, T]):
    """A public method written once, as a plan: ``Formation`` runs it, ``AsyncFormation``
    awaits it (``plans.twins`` makes both halves; each class is given its own)."""

    def __init__(self, plan: Callable[Concatenate[Any, P], Plan[T]]) -> None:
        self.sync, self.async_ = twins(plan, plan.__name__, plan.__name__)

    @overload
    def __get__(self, obj: None, owner: type[Any]) -> Callable[..., Any]: ...

    @overload
    def __get__(self, obj: AsyncFormation, owner: type[Any]) -> Callable[P, Awaitable[T]]: ...

    @overload
    def __get__(self, obj: Formation, owner: type[Any]) -> Callable[P, T]: ...

    def __get__(self, obj: Any, owner: type[Any]) -> Any:
        half = self.async_ if owner._awaits else self.sync
        return half if obj is None else half.__get__(obj, owner)


class _FormationBase(Generic[H, X]):
    _awaits: ClassVar[bool]

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        client_key: str | None = None,
        *,
        user_id: str | None = None,
        timeout: float = 30.0,
        http: H | None = None,
        transport: X | None = None,
        retries: int = 3,
        backoff: float = 0.2,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.client_key = client_key
        self.user_id = user_id
        self.retries, self.backoff = retries, backoff
        self._owns = http is None
        self._http: H = http or self._open(timeout, transport)

    def _open(self, timeout: float, transport: X | None) -> H:
        raise NotImplementedError("_open")

    def _request(self, call: _Call[Any]) -> httpx.Response:
        raise NotImplementedError("_request")

    async def _arequest(self, call: _Call[Any]) -> httpx.Response:
        raise NotImplementedError("_arequest")

    def _retry_in(
        self, call: _Call[Any], attempt: int, response: httpx.Response | None
    ) -> float | None:
        """Seconds to wait before sending ``call`` again, or ``None`` to stop: after a 503,
        or (``response`` is ``None``) a failed connection when the call is safe to resend."""
        if attempt >= self.retries:
            return None
        if response is None and not call.safe_to_resend:
            return None
        if response is not None and response.status_code != 503:
            return None
        delay: float = self.backoff * 2**attempt
        told = "" if response is None else str(response.headers.get("retry-after", ""))
        if told.isdigit():
            delay = max(delay, min(float(told), 30.0))
        return delay

    def _send(self, call: _Call[T]) -> Plan[T]:
        """Send ``call``, retrying as ``_retry_in`` says; the one place a request goes out."""
        attempt = 0
        while True:
            try:
                response = yield from step(self._request, self._arequest, call)
            except httpx.TransportError:
                if (delay := self._retry_in(call, attempt, None)) is None:
                    raise
            else:
                if (delay := self._retry_in(call, attempt, response)) is None:
                    raise_for_error(response)
                    return call.parse(response)
            yield from step(time.sleep, _asleep, delay)
            attempt += 1

    def _call(
        self,
        method: str,
        path: str,
        user_id: str | None,
        parse: Callable[[httpx.Response], T],
        json: Any = None,
    ) -> Plan[T]:
        """Build the request (its headers, its Idempotency-Key) and send it."""
        headers: list[tuple[bytes, bytes]] = []
        if self.client_key is not None:
            headers.append((b"X-Muxi-Client-Key", self.client_key.encode()))
        user = user_id if user_id is not None else self.user_id
        if user is not None:  # UTF-8, so any canonical id can be sent
            headers.append((b"X-Muxi-User-Id", user.encode("utf-8")))
        key = None
        if method == "POST":  # one key per call: its retries are one request to the server
            key = uuid.uuid4().hex
            headers.append((b"Idempotency-Key", key.encode()))
        return self._send(_Call(method, self.base_url + path, headers, parse, json, key))

    @_Endpoint
    def create_session(self, user_id: str | None = None) -> Plan[Session]:
        return self._call("POST", "/v1/sessions", user_id, lambda r: Session.from_json(r.json()))

    @_Endpoint
    def chat(
        self,
        message: str,
        session_id: str | None = None,
        user_id: str | None = None,
        *,
        metadata: Mapping[str, Any] | None = None,
    ) -> Plan[ChatResponse]:
        """One chat turn; without ``session_id`` the server starts a new session."""
        body: dict[str, Any] = {"message": message}
        if session_id is not None:
            body["session_id"] = session_id
        if metadata:
            body["metadata"] = dict(metadata)

        def parse(r: httpx.Response) -> ChatResponse:
            data = r.json()
            return ChatResponse(data["response"], data["session_id"], data["user_id"])

        return self._call("POST", "/v1/chat", user_id, parse, body)

    @_Endpoint
    def history(self, session_id: str, user_id: str | None = None) -> Plan[SessionHistory]:
        def parse(r: httpx.Response) -> SessionHistory:
            data = r.json()
            messages = [ChatMessage.from_json(m) for m in data["messages"]]
            return SessionHistory(Session.from_json(data), messages)

        return self._call("GET", f"/v1/sessions/{quote(session_id, safe='')}", user_id, parse)

    @_Endpoint
    def list_sessions(self, user_id: str | None = None) -> Plan[list[Session]]:
        def parse(r: httpx.Response) -> list[Session]:
            return [Session.from_json(s) for s in r.json()["sessions"]]

        return self._call("GET", "/v1/sessions", user_id, parse)

    @_Endpoint
    def delete_session(self, session_id: str, user_id: str | None = None) -> Plan[None]:
        path = f"/v1/sessions/{quote(session_id, safe='')}"
        return self._call("DELETE", path, user_id, lambda r: None)

    @_Endpoint
    def export_user(self, user_id: str) -> Plan[dict[str, Any]]:
        """Admin key: everything stored for ``user_id``."""
        return self._call("GET", f"/v1/admin/users/{quote(user_id, safe='')}/export", None, _json)

    @_Endpoint
    def forget_user(self, user_id: str) -> Plan[dict[str, Any]]:
        """Admin key: delete every row of ``user_id``."""
        return self._call("DELETE", f"/v1/admin/users/{quote(user_id, safe='')}", None, _json)


class Formation(_FormationBase[httpx.Client, httpx.BaseTransport], Closing):
    """A synchronous client for one server and one key.

    ``user_id`` on a call overrides the default given here; neither means user ``"0"``.
    Pass ``http`` to share a configured ``httpx.Client`` (it is then not closed here).
    """

    _awaits = False

    def _open(self, timeout: float, transport: httpx.BaseTransport | None) -> httpx.Client:
        return httpx.Client(timeout=timeout, transport=transport)

    def _request(self, call: _Call[Any]) -> httpx.Response:
        return self._http.request(call.method, call.url, headers=call.headers, json=call.json)

    def close(self) -> None:
        if self._owns:
            self._http.close()


class AsyncFormation(_FormationBase[httpx.AsyncClient, httpx.AsyncBaseTransport]):
    """``Formation`` with ``await``; ``transport=httpx.ASGITransport(app)`` calls an app."""

    _awaits = True

    def _open(
        self, timeout: float, transport: httpx.AsyncBaseTransport | None
    ) -> httpx.AsyncClient:
        return httpx.AsyncClient(timeout=timeout, transport=transport)

    async def _arequest(self, call: _Call[Any]) -> httpx.Response:
        return await self._http.request(call.method, call.url, headers=call.headers, json=call.json)

    async def aclose(self) -> None:
        if self._owns:
            await self._http.aclose()

    async def __aenter__(self) -> AsyncFormation:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
