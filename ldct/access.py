"""Who may call what: the server's route allow-list by role, enforced in front of every route.

`AccessGuard` is an ASGI middleware (no web framework needed) that answers ``GET /health``
itself, asks every other request for ``Authorization: Bearer <token>`` (401 without a valid
one), serves only the routes of `ROUTES` (404 for anything else, whatever the role) and only to
their roles (403 naming the roles needed). A reader token reaches only its own study's and
reader id's routes; a mismatch is refused exactly as an unknown reader is, so it tells nothing.
The identity is left in ``scope["ldct.identity"]`` for the routes.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from ldct.auth import Identity, TokenStore
from ldct.study.page import PAGE_PATH

logger = logging.getLogger(__name__)

IDENTITY_KEY = "ldct.identity"
HEALTH_PATH = "/health"
STAFF = ("radiologist", "coordinator", "admin")
SEGMENT = r"[^/]+"


@dataclass(frozen=True)
class Route:
    """Methods on a path pattern (``{name}`` is one path segment) and the roles allowed."""

    methods: tuple[str, ...]
    pattern: str
    roles: tuple[str, ...]

    def match(self, method: str, path: str) -> dict[str, str] | None:
        if method not in self.methods:
            return None
        regex = re.sub(r"\{(\w+)\}", rf"(?P<\1>{SEGMENT})", self.pattern)
        found = re.fullmatch(regex + "/?", path)
        return found.groupdict() if found else None


# Everything the product serves. MONAI Label's other routes (sample, active learning, scoring,
# sessions, model upload, proxy, logs, reload, datastore writes, OHIF) are not served at all.
ROUTES = (
    Route(("GET",), "/openapi.json", ("radiologist", "coordinator", "admin", "reader")),
    Route(("GET",), "/info", STAFF),
    Route(("POST",), "/infer/{model}", ("radiologist", "admin")),
    Route(("GET",), "/jobs", ("radiologist", "admin")),
    Route(("GET", "DELETE"), "/jobs/{job}", ("radiologist", "admin")),
    Route(("GET",), "/datastore", STAFF),
    Route(("GET",), "/datastore/{image}/dicom", ("radiologist", "admin")),
    Route(("GET",), "/train", ("admin",)),
    Route(("POST",), "/train/{model}", ("admin",)),
    Route(("GET",), "/study", ("reader", "coordinator", "admin")),
    Route(("POST",), "/study", ("coordinator", "admin")),
    Route(("POST",), "/study/{study}/readers/{reader}/session", ("reader",)),
    Route(("GET",), "/study/{study}/readers/{reader}/next", ("reader",)),
    Route(("POST",), "/study/{study}/readers/{reader}/items/{item}", ("reader",)),
    Route(("GET",), "/study/{study}/volumes/{token}", ("reader", "coordinator", "admin")),
    Route(("GET",), "/study/{study}/status", ("coordinator", "admin")),
    Route(("POST",), "/study/{study}/close", ("coordinator", "admin")),
    Route(("GET",), "/study/{study}/export", ("coordinator", "admin")),
)

# The browser reader page's static files: no data, no secret; a browser opening a link cannot
# send a token, so they are served to anyone (`ldct.study.page` says how the token reaches it).
PUBLIC = (Route(("GET",), PAGE_PATH, ()), Route(("GET",), PAGE_PATH + "/{asset}", ()))

# on every answer: nothing is cached (answers carry patient data), no content sniffing
PRIVATE_HEADERS = ((b"cache-control", b"no-store"), (b"x-content-type-options", b"nosniff"))
ANONYMOUS_ADMIN = Identity("anonymous (--insecure-no-auth)", "admin")


def reader_refusal(study: str, reader: str) -> str:
    """The one answer for another reader's routes and for an unknown reader (no oracle)."""
    return (f"your token is not reader '{reader}' of study '{study}'; use the reader token the "
            "study coordinator gave you")


@dataclass(frozen=True)
class Decision:
    """What the guard does with a request: pass it on (status 0) or answer ``status``."""

    status: int = 0
    detail: str = ""
    identity: Identity | None = None


def decide(method: str, path: str, identity: Identity | None) -> Decision:
    """The guard's verdict for one request (pure, so every rule is tested directly)."""
    if any(route.match("GET" if method == "HEAD" else method, path) is not None
           for route in PUBLIC):
        return Decision(identity=identity)
    if identity is None:
        return Decision(401, "this server needs a token: send 'Authorization: Bearer <token>' "
                             "(ask the server's admin; `ldct token add NAME --role ROLE`)")
    method = "GET" if method == "HEAD" else method
    for route in ROUTES:
        params = route.match(method, path)
        if params is None:
            continue
        if identity.role not in route.roles:
            return Decision(403, f"{method} {route.pattern} needs the role "
                                 f"{' or '.join(route.roles)}; your token '{identity.name}' "
                                 f"has the role {identity.role}")
        if identity.role == "reader" and "study" in params:
            reader = params.get("reader", identity.reader)
            if (params["study"], reader) != (identity.study, identity.reader):
                return Decision(403, reader_refusal(params["study"], reader))
        return Decision(identity=identity)
    return Decision(404, f"{method} {path} is not served by this server")


def caller(scope: dict) -> Identity | None:
    """Who the guard let through for this request (None only for /health)."""
    return scope.get(IDENTITY_KEY)


def bearer(headers: list[tuple[bytes, bytes]]) -> str:
    """The token of an ``Authorization: Bearer`` header ('' when there is none)."""
    for key, value in headers:
        if key.lower() == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            return token.strip() if scheme.lower() == "bearer" else ""
    return ""


ASGIApp = Callable[[dict, Callable, Callable], Awaitable[None]]


class AccessGuard:
    """ASGI middleware: health, authentication and the route allow-list before any route."""

    def __init__(self, app: ASGIApp, store: TokenStore | None, health: Callable[[], dict]
                 ) -> None:
        """``store`` None means --insecure-no-auth (loopback only): every caller is admin."""
        self.app, self.store, self.health = app, store, health

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method, path = scope["method"], scope["path"]
        if path == HEALTH_PATH and method in ("GET", "HEAD"):
            await _answer(send, 200, self.health())
            return
        if self.store is None:
            identity = ANONYMOUS_ADMIN
        else:
            token = bearer(scope.get("headers", []))
            identity = self.store.identify(token) if token else None
        decision = decide(method, path, identity)
        if decision.status:
            if decision.status == 401:  # the path as sent, escaped: no line of the client's
                logger.info("refused %s %s: no valid token", method,
                            path.encode("unicode_escape").decode("ascii")[:200])
            await _answer(send, decision.status, {"detail": decision.detail},
                          [(b"www-authenticate", b"Bearer")] if decision.status == 401 else [])
            return
        scope[IDENTITY_KEY] = decision.identity
        await self.app(scope, receive, _with_headers(send))


def _with_headers(send: Callable) -> Callable:
    """``send`` adding `PRIVATE_HEADERS` to the answer: answers carry patient data."""

    async def sending(message: dict) -> None:
        if message["type"] == "http.response.start":
            present = {key.lower() for key, _ in message.get("headers", [])}
            message["headers"] = [*message.get("headers", []),
                                  *((k, v) for k, v in PRIVATE_HEADERS if k not in present)]
        await send(message)
    return sending


async def _answer(send: Callable, status: int, body: dict[str, Any],
                  headers: list[tuple[bytes, bytes]] | None = None) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(data)).encode()), *PRIVATE_HEADERS,
                            *(headers or [])]})
    await send({"type": "http.response.body", "body": data})
