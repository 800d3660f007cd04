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

import os

from srft.view.config import LOOPBACK, ViewConfig
from srft.view.routes import build_app
from srft.view.security import HostGuard

__all__ = ["ViewConfig", "create_app", "serve"]


def create_app(config: ViewConfig):
    """Load the store, annotations and database (errors surface here, before serving) and build the app."""
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
