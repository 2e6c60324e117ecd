"""Serving over HTTP, hardened: slow clients cut off, headers and connections bounded.

`on_http` serves any FastMCP server with uvicorn on loopback (or a given host):
a whole request within SEND_WITHIN seconds, at most MAX_CONNECTIONS open, at
most MAX_HEADERS bytes of request line and headers; the server's own Host,
Origin and body guards come with it (tasks_demo.GuardedFastMCP).
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import h11
import uvicorn
from fastmcp import FastMCP

from deploy import DemoError
from deploy.processes import free_port


class HttpServer(uvicorn.Server):
    """uvicorn, leaving signals to the caller (`stop_on_signals`, `leave_now`):
    its own handler restores the previous one on the way out and raises the
    signal again, and a draining `serve` then never ended."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


SEND_WITHIN = 10.0  # seconds a client has to send a whole request, from its start
MAX_CONNECTIONS = 2000  # open at once, idle ones and listen streams (one each) included
MAX_HEADERS = 16 * 1024  # bytes of request line and headers (every header goes into a task)


class HeaderCap:
    """431 for a request whose line and headers exceed MAX_HEADERS. (uvicorn's
    h11 limit bounds only headers that arrive in pieces: a 60 KB block in one
    read passed it.)"""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] == "http" and len(scope.get("raw_path", b"")) + sum(
                len(name) + len(value) for name, value in scope["headers"]) > MAX_HEADERS:
            await send({"type": "http.response.start", "status": 431,
                        "headers": [(b"content-length", b"0"), (b"connection", b"close")]})
            await send({"type": "http.response.body", "body": b""})
            return
        await self.app(scope, receive, send)


def guarded_h11(seconds: float) -> type:
    """uvicorn's HTTP/1.1 protocol, with a deadline for a whole request.

    uvicorn arms its one timer (keep-alive) only after a response, and any byte
    cancels it: a connection that sends nothing, or a byte a second, stays open
    for ever. This one closes it unless the request (headers and body) is in
    `seconds` after the connection opened, or after the first byte of a later
    request on it: with a 408 if it sent part of one.
    """
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeaderDeadline(H11Protocol):
        timer: asyncio.TimerHandle | None = None
        started = False

        def arm(self) -> None:
            self.disarm()
            self.started, self.timer = False, self.loop.call_later(seconds, self.too_slow)

        def disarm(self) -> None:
            if self.timer is not None:
                self.timer.cancel()
                self.timer = None

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self.arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self.disarm()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if self.timer is None and self.conn.their_state is h11.IDLE:
                self.arm()  # a later request on a kept-alive connection
            self.started = self.started or bool(data)
            super().data_received(data)
            if self.conn.their_state is not h11.IDLE and self.conn.their_state is not \
                    h11.SEND_BODY:  # the whole request is in
                self.disarm()

        def too_slow(self) -> None:
            self.timer = None
            if self.transport.is_closing() or self.conn.their_state not in (h11.IDLE,
                                                                              h11.SEND_BODY):
                return
            if self.started:
                self.transport.write(b"HTTP/1.1 408 Request Timeout\r\nconnection: close\r\n"
                                     b"content-length: 0\r\n\r\n")
            self.transport.close()

    return HeaderDeadline


@asynccontextmanager
async def on_http(server: FastMCP, port: int | None = None, host: str = "127.0.0.1",
                  names: tuple = ()) -> AsyncIterator[str]:
    """Serve `server` over streamable HTTP; yield its URL.

    Host/Origin protection on: a request whose Host is not this server's
    (127.0.0.1, localhost, ::1, `host`, or one of `names`: the names clients
    and balancers reach it by), or that comes from a web page of another
    origin, is refused (421, 403). Without it a page in the user's browser
    could drive a local server through DNS rebinding.
    """
    port = port or free_port()
    # A connection is a file: let this process open as many as the system allows it.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < MAX_CONNECTIONS + 100:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, MAX_CONNECTIONS + 100), hard))
    extra = [*names, *([] if is_loopback(host) else [host])]
    app = server.http_app(host_origin_protection=True, allowed_hosts=extra or None)
    # Idle and slow clients are bounded: a whole request within SEND_WITHIN, its
    # headers to MAX_HEADERS, 5 s idle between requests, and past MAX_CONNECTIONS
    # open at once, new requests get 503 until some close.
    web = HttpServer(uvicorn.Config(HeaderCap(app), host=host, port=port, log_level="warning",
                                    timeout_graceful_shutdown=2, http=guarded_h11(SEND_WITHIN),
                                    timeout_keep_alive=5, limit_concurrency=MAX_CONNECTIONS,
                                    h11_max_incomplete_event_size=MAX_HEADERS))
    running = asyncio.create_task(web.serve())
    while not web.started:
        if running.done():
            await running  # raises what stopped it
            raise DemoError(f"the HTTP server on {host}:{port} stopped at once")
        await asyncio.sleep(0.01)
    try:
        yield f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}/mcp"
    finally:
        web.should_exit = True
        await running


def is_loopback(host: str) -> bool:
    return host in ("localhost", "::1") or host.startswith("127.")
