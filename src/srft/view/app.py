"""The viewer/labeller web app (`srft view`): server-rendered pages, one JSON endpoint per state change.

Security model (trajectories hold arbitrary code and HTML, and the server writes a database):
- binds 127.0.0.1 unless told otherwise;
- `HostGuard` refuses any request whose Host header is not the bound host:port (or a loopback alias of it, or
  an --allow-host name): a DNS-rebinding page cannot talk to the server under its own name;
- all trajectory text goes through Jinja autoescaping (no `|safe` on data) or `textContent` in app.js, and a
  Content-Security-Policy allows only this server's own script and styles (no inline script);
- state changes are POST only, need the session cookie (SameSite=Strict, HttpOnly) and the per-session
  CSRF token in a header or form field, and a foreign Origin header is refused.
"""

from __future__ import annotations

import getpass
import hmac
import os
import re
import secrets
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from srft.model import Label

LOOPBACK = ("127.0.0.1", "localhost", "[::1]")
COOKIE = "srft_session"
MAX_SESSIONS = 256  # sessions held in memory; the oldest is forgotten first (it simply gets a new one)
ANNOTATOR_RE = re.compile(r"^[\w.@+-][\w .@+-]{0,63}$")
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "form-action 'self'; base-uri 'none'; frame-ancestors 'none'")


def _default_annotator() -> str:
    try:
        name = getpass.getuser()
    except (KeyError, OSError):
        name = ""
    return name if ANNOTATOR_RE.match(name or "") else "annotator"


class ViewConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    data: Path = Field(description="trajectory store: an `srft ingest` output directory or a store file")
    annotations: list[Path] = Field(default_factory=list, description="step-label files shown beside each step")
    labels_db: Path | None = Field(None, description="SQLite file for human labels (default DATA/labels.db)")
    host: str = Field("127.0.0.1", description="address to bind; anything but loopback exposes the labels")
    port: int = Field(8800, ge=1, le=65535, description="TCP port to bind")
    allow_hosts: list[str] = Field(default_factory=list, description="extra Host header names to accept")
    annotator: str = Field(default_factory=_default_annotator, description="default annotator name")
    tokenizer: Path | None = Field(None, description="tokenizer directory for the token-mask view")
    policy: str = Field("srft", description="default policy of the token-mask view")
    mask_labels: tuple[Label, ...] = Field(("mistake",), description="labels the policy masks (agreement F1)")

    @field_validator("annotator")
    @classmethod
    def _name(cls, value: str) -> str:
        if not ANNOTATOR_RE.match(value):
            raise ValueError(f"annotator {value!r}: 1-64 letters, digits, spaces or . @ + - _")
        return value

    def db_path(self) -> Path:
        if self.labels_db is not None:
            return self.labels_db
        return (self.data if self.data.is_dir() else self.data.parent) / "labels.db"

    def allowed_hosts(self) -> set[str]:
        """Host header values accepted: host:port, loopback aliases when bound to loopback, --allow-host."""
        names = {self.host} | (set(LOOPBACK) if self.host in LOOPBACK + ("::1",) else set())
        return {_host_key(h, self.port) for h in names | set(self.allow_hosts)}


def _host_key(name: str, port: int) -> str:
    """A Host header value as browsers send it: lower case, IPv6 in brackets, with the port."""
    name = name.lower()
    if name.count(":") > 1 and not name.startswith("["):
        return f"[{name}]:{port}"
    return name if re.search(r":\d+$", name) else f"{name}:{port}"


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


def create_app(config: ViewConfig):
    """Load the store, annotations and database (errors surface here, before serving) and build the app."""
    from srft.view.routes import build_app

    return HostGuard(build_app(config), config.allowed_hosts())


def serve(config: ViewConfig, *, log_level: str = "warning") -> None:
    """Run the viewer until interrupted."""
    import uvicorn

    app = create_app(config)
    if config.host not in LOOPBACK + ("::1",):
        print(f"warning: binding {config.host}: anyone who can reach this port can read the trajectories and "
              f"write labels; Host headers accepted: {sorted(config.allowed_hosts())}", flush=True)
    print(f"srft view: http://{_url_host(config.host)}:{config.port}/ (labels in {config.db_path()})", flush=True)
    uvicorn.run(app, host=config.host, port=config.port, log_level=log_level, proxy_headers=False,
                server_header=False, access_log=os.environ.get("SRFT_VIEW_ACCESS_LOG") == "1")


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def static_dir() -> Path:
    return Path(__file__).parent / "static"
