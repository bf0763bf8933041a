"""The HTTP side shared by ``PolicyServer`` and ``jrl serve``: aiohttp on one event loop.

Why aiohttp: one event-loop thread holds every connection (no thread per client fighting for
the GIL), handlers await the inference thread's futures instead of blocking, and its request
parser enforces the body cap (413) before a handler runs. The stdlib's ``ThreadingHTTPServer``
spends a thread per connection and has no such limits.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
import socket
import threading
from collections.abc import Awaitable, Callable
from typing import Any

from jrl.errors import ConfigError, JrlError
from jrl.rollout.external_env import (
    EpisodeConflictError,
    ExternalEnvClosed,
    TooManyEpisodesError,
    UnknownEpisodeError,
)
from jrl.serving.protocol import ProtocolError, dumps

logger = logging.getLogger(__name__)

Handler = Callable[[Any], Awaitable[Any]]


def is_loopback(address: str) -> bool:
    """Whether ``address`` (a host name or IP) resolves only to loopback addresses."""
    try:
        infos = socket.getaddrinfo(address, None)
    except (socket.gaierror, UnicodeError):
        raise ConfigError(f"cannot resolve server address {address!r}") from None
    return all(ipaddress.ip_address(info[4][0].split("%")[0]).is_loopback for info in infos)


def check_bind(address: str, token: str | None) -> None:
    """Refuses to listen beyond loopback without a token."""
    if token is not None and (not isinstance(token, str) or len(token) < 8):
        raise ConfigError("token must be a string of at least 8 characters")
    if not is_loopback(address) and not token:
        raise ConfigError(f"refusing to serve on {address} without a token: pass token=... "
                          "(--token) or bind to 127.0.0.1")


def status_of(error: BaseException) -> int:
    if isinstance(error, ProtocolError):
        return error.status
    if isinstance(error, UnknownEpisodeError):
        return 404
    if isinstance(error, EpisodeConflictError):
        return 409
    if isinstance(error, TooManyEpisodesError):
        return 429
    if isinstance(error, JrlError):
        return 400
    return 503


def _one_line(text: str) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= 300 else line[:297] + "..."


class JsonHttpServer:
    """A JSON-over-HTTP server on its own event loop.

    Args:
      address: interface to bind (loopback unless a token is given).
      port: TCP port (0: any free port; ``self.port`` says which).
      token: bearer token every request but ``GET /healthz`` must carry
        (``Authorization: Bearer <token>``), compared in constant time.
      max_body_bytes: larger request bodies get 413.
      request_timeout: seconds a request may take (reading its body, waiting for an action).
      max_inflight: requests handled at once; more get 503 right away.
    """

    def __init__(self, address: str = "127.0.0.1", port: int = 9900, token: str | None = None,
                 *, max_body_bytes: int = 4 << 20, request_timeout: float = 30.0,
                 max_inflight: int = 256):
        from aiohttp import web

        check_bind(address, token)
        self.address = address
        self.token = token
        self.max_body_bytes = int(max_body_bytes)
        self.request_timeout = float(request_timeout)
        self._inflight = 0
        self._max_inflight = int(max_inflight)
        self._loop = _new_event_loop()
        self._app = web.Application(client_max_size=self.max_body_bytes,
                                    middlewares=[self._middleware])
        self._app.router.add_get("/healthz", self._healthz)
        self.add_routes(self._app.router)
        self._runner = web.AppRunner(self._app, access_log=None, handle_signals=False)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, address, port, reuse_address=True)
        try:
            self._loop.run_until_complete(site.start())
        except OSError as e:
            self._loop.run_until_complete(self._runner.cleanup())
            self._loop.close()
            raise ConfigError(f"cannot listen on {address}:{port}: {e.strerror or e}") from None
        self.port = int(self._runner.addresses[0][1])
        self._serving = threading.Event()
        self._stopped = False
        self._thread: threading.Thread | None = None

    # -- subclasses -----------------------------------------------------------------------------

    def add_routes(self, router: Any) -> None:
        """Adds the server's routes (``router.add_post(path, handler)``)."""

    def health(self) -> dict[str, Any]:
        return {"status": "ok"}

    # -- running --------------------------------------------------------------------------------

    def serve_forever(self) -> None:
        """Serves in the calling thread until ``shutdown()``."""
        asyncio.set_event_loop(self._loop)
        self._serving.set()
        try:
            if not self._stopped:
                self._loop.run_forever()
        finally:
            self._loop.run_until_complete(self._runner.cleanup())
            self._loop.close()

    def start(self) -> JsonHttpServer:
        """Serves in a daemon thread; returns self."""
        self._thread = threading.Thread(target=self.serve_forever, daemon=True,
                                        name=f"{type(self).__name__}:{self.port}")
        self._thread.start()
        self._serving.wait()
        return self

    def shutdown(self) -> None:
        """Stops serving (from any thread); the port is free once ``serve_forever`` returns."""
        if self._stopped:
            return
        self._stopped = True
        if not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.address in ("0.0.0.0", "") else self.address
        return f"http://{host}:{self.port}"

    # -- request plumbing -----------------------------------------------------------------------

    async def read_body(self, request: Any) -> bytes:
        if request.content.is_eof():  # the whole body arrived with the head: nothing to wait for
            return await request.read()
        return await asyncio.wait_for(request.read(), self.request_timeout)

    def json_response(self, value: Any, status: int = 200) -> Any:
        from aiohttp import web

        return web.Response(body=dumps(value), status=status, content_type="application/json")

    def error_response(self, status: int, message: str, **extra: Any) -> Any:
        return self.json_response({"error": _one_line(message), **extra}, status=status)

    async def _healthz(self, request: Any) -> Any:
        return self.json_response(self.health())

    def _authorized(self, request: Any) -> bool:
        if not self.token:
            return True
        given = request.headers.get("Authorization", "")
        scheme, _, value = given.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            value.strip().encode(), self.token.encode())

    @property
    def _middleware(self) -> Callable:
        from aiohttp import web

        @web.middleware
        async def middleware(request: Any, handler: Handler) -> Any:
            if request.path != "/healthz" and not self._authorized(request):
                return self.error_response(401, "missing or wrong token (send "
                                           "'Authorization: Bearer <token>')")
            if self._inflight >= self._max_inflight:
                return self.error_response(503, "server busy: too many requests in flight")
            self._inflight += 1
            try:
                return await handler(request)
            except web.HTTPException as e:  # 404, 405, 413 from aiohttp itself
                if e.status < 400:
                    raise
                text = e.reason if e.status != 413 else (
                    f"request body too large (limit {self.max_body_bytes} bytes)")
                return self.error_response(e.status, text)
            except (asyncio.TimeoutError, TimeoutError):
                return self.error_response(503, "request timed out")
            except (JrlError, ExternalEnvClosed) as e:
                return self.error_response(status_of(e), str(e), **getattr(e, "extra", {}))
            except Exception as e:  # never let a request take the server down
                logger.exception("request %s %s failed", request.method, request.path)
                return self.error_response(500, f"internal error: {type(e).__name__}")
            finally:
                self._inflight -= 1

        return middleware


def _new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's loop when installed (about twice as fast per request), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()
