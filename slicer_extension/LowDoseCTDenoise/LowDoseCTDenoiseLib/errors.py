"""Errors of the server client: each says what went wrong and what the user can do."""

from __future__ import annotations


class ServerError(Exception):
    """Base class: anything that stopped a request to the denoising server."""


class ServerUnreachable(ServerError):
    """Nothing answers at the URL (connection refused, unknown host, network down)."""


class NotMonaiLabel(ServerError):
    """Something answers, but it is not a MONAI Label server (wrong URL or port)."""


class AuthenticationFailed(ServerError):
    """HTTP 401/403: the server wants (other) credentials."""


class ModelMissing(ServerError):
    """The server does not serve the requested model."""


class RequestRejected(ServerError):
    """HTTP 4xx: the server refused the request; the message is the server's reason."""


class ServerFailure(ServerError):
    """HTTP 5xx: the server failed while handling the request."""


class ServerTimeout(ServerError):
    """No answer within the connect or read timeout."""


class Cancelled(ServerError):
    """The user cancelled the request."""
