"""The viewer's security pieces (the model is in srft.view.app's docstring): the Host/Origin guard with its
security headers, and the sessions holding each browser's CSRF token and annotator name."""

from __future__ import annotations

import hmac
import secrets
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

COOKIE = "srft_session"
MAX_SESSIONS = 256  # sessions held in memory; the oldest is forgotten first (it simply gets a new one)
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "form-action 'self'; base-uri 'none'; frame-ancestors 'none'")


@dataclass
class Session:
    csrf: str
    annotator: str


class HostGuard:
    """ASGI middleware: refuse foreign Host headers (DNS rebinding) and foreign Origins; add security headers."""

    def __init__(self, app: Any, allowed: set[str]):
        self.app, self.allowed = app, allowed
        self.origins = {f"http://{h}" for h in allowed}

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":  # the app has none; refuse rather than guard a protocol it never speaks
            return await send({"type": "websocket.close", "code": 1008})
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        host, origin = headers.get("host", "").lower(), headers.get("origin")
        if host not in self.allowed:
            return await _plain(send, 421, f"host {host!r} not allowed (this server answers only to "
                                           f"{', '.join(sorted(self.allowed))})")
        if origin is not None and origin.lower() not in self.origins and scope.get("method") != "GET":
            return await _plain(send, 403, f"cross-origin request from {origin!r} refused")

        async def secured(message: dict) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = list(message.get("headers", [])) + [
                    (b"content-security-policy", CSP.encode()), (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"no-referrer"), (b"x-frame-options", b"DENY"),
                    (b"cache-control", b"no-store")]
            await send(message)

        return await self.app(scope, receive, secured)


async def _plain(send: Any, status: int, text: str) -> None:
    body = text.encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"), (b"x-content-type-options", b"nosniff"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class Sessions:
    def __init__(self, default_annotator: str):
        self.default = default_annotator
        self._items: OrderedDict[str, Session] = OrderedDict()
        self._lock = threading.Lock()  # pages are rendered in a thread pool

    def get(self, sid: str | None) -> Session | None:
        with self._lock:
            return self._items.get(sid) if sid else None

    def new(self) -> tuple[str, Session]:
        sid, session = secrets.token_urlsafe(32), Session(secrets.token_urlsafe(32), self.default)
        with self._lock:
            self._items[sid] = session
            while len(self._items) > MAX_SESSIONS:
                self._items.popitem(last=False)
        return sid, session

    @staticmethod
    def check(session: Session | None, token: str | None) -> bool:
        return session is not None and token is not None and hmac.compare_digest(session.csrf, token)
