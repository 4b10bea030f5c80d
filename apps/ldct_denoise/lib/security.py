"""MONAI Label's server reduced to this app's routes, behind the access guard (`ldct.access`).

MONAI Label serves some 45 routes without credentials (datastore writes that take paths,
a DICOMweb proxy, reload, logs, sessions, ...) and a CORS policy that reflects any origin with
credentials. Called once from the app's start-up, before the server accepts a request, this
keeps none of MONAI Label's routes but its OpenAPI schema, adds the app's own routers, drops
its CORS policy (an allow-list replaces it when origins are configured) and puts the guard in
front.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from fastapi import APIRouter, FastAPI
from starlette.middleware.cors import CORSMiddleware

from ldct.access import AccessGuard
from ldct.serve import ServerSettings

OPENAPI_PATH = "/openapi.json"


def secure(server: FastAPI, routers: Iterable[APIRouter], settings: ServerSettings,
           health: Callable[[], dict]) -> None:
    """Serve only the OpenAPI schema and ``routers``, each request through the guard first,
    request bodies capped at ``settings.max_upload_bytes``."""
    server.router.routes = [route for route in server.router.routes
                            if getattr(route, "path", None) == OPENAPI_PATH]
    for router in routers:
        server.include_router(router)
    server.openapi_schema = None  # regenerated from the routes left, saying how to sign in
    schema = server.openapi()
    schema.setdefault("components", {})["securitySchemes"] = {
        "bearer": {"type": "http", "scheme": "bearer",
                   "description": "a token of `ldct token add` (or a study's reader token)"}}
    schema["security"] = [{"bearer": []}]
    server.user_middleware = []  # MONAI Label's CORS policy reflects any origin
    server.max_body_size = settings.max_upload_bytes
    app = AccessGuard(server.build_middleware_stack(), settings.store, health)
    if settings.cors_origins:  # outside the guard, so that preflights are answered
        app = CORSMiddleware(app, allow_origins=settings.cors_origins, allow_credentials=False,
                             allow_methods=["GET", "POST", "DELETE"],
                             allow_headers=["Authorization", "Content-Type"])
    server.middleware_stack = app
