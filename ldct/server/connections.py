"""HTTP connections that owe the server bytes are closed when the bytes do not come.

uvicorn (which MONAI Label's start_server runs) bounds only the wait between two requests
(keep-alive): a client that connects and sends nothing, half a header, or a body that stops
half-way holds its connection and its file descriptor for ever, so a few hundred of them
exhaust the server. This protocol gives the request's head a deadline counted from the
connection's start (or the previous answer's end) and its body an idle bound, counted from
its last bytes; when either passes, the connection is closed, with a 408 when part of a
request had come. The
server's own waits do not count: a body the application has not read yet (uvicorn stopped
reading: flow control) or a ``100 Continue`` not sent yet.
"""

from __future__ import annotations

import asyncio
import logging
import os

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

REQUEST_TIMEOUT_ENV = "LDCT_REQUEST_TIMEOUT_S"
DEFAULT_REQUEST_TIMEOUT_S = 30.0  # loopback or a clinic LAN sends a head in milliseconds
TIMED_OUT = (b"HTTP/1.1 408 Request Timeout\r\nContent-Type: text/plain\r\nConnection: close\r\n"
             b"Content-Length: %d\r\n\r\n%s")

log = logging.getLogger(__name__)


def request_timeout() -> float:
    """Seconds a client may take to send a request's head, or to go on with its body."""
    return float(os.environ.get(REQUEST_TIMEOUT_ENV, DEFAULT_REQUEST_TIMEOUT_S))


class BoundedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline for the request head and an idle bound for the
    body."""

    _timer: asyncio.TimerHandle | None = None
    _heard = False  # bytes of the next request came (a silent idle connection gets no 408)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        self._heard = True
        super().data_received(data)
        state = self.conn.their_state
        if state is h11.SEND_BODY:
            self._arm()  # the body: bounded from its last bytes
        elif state is not h11.IDLE:
            self._disarm()  # the request is whole: the server's turn
        # IDLE: the head is still arriving; its deadline stands

    def on_response_complete(self) -> None:
        super().on_response_complete()
        state = self.conn.their_state  # a pipelined request may have begun already
        if state in (h11.IDLE, h11.SEND_BODY) and not self.transport.is_closing():
            self._heard = state is h11.SEND_BODY
            self._arm()  # the next request's head, or its body

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._timer = self.loop.call_later(request_timeout(), self._expired)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expired(self) -> None:
        self._timer = None
        if self.transport.is_closing() or self.conn.their_state not in (h11.IDLE, h11.SEND_BODY):
            return
        waiting_on_us = self.flow.read_paused or (
            self.cycle is not None and self.cycle.waiting_for_100_continue)
        if waiting_on_us:
            self._arm()
            return
        part = "body" if self.conn.their_state is h11.SEND_BODY else "head"
        message = (f"the request's {part} did not arrive within {request_timeout():g} s; "
                   "send the whole request at once").encode()
        answering = (self.cycle is not None and self.cycle.response_started
                     and not self.cycle.response_complete)
        if self._heard and not answering:
            self.transport.write(TIMED_OUT % (len(message), message))
        log.info("closed a connection from %s: its request's %s stopped", self.client, part)
        self.transport.close()
