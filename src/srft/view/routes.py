"""The viewer's routes. Pages are rendered on the server; app.js only posts labels and fills in replies.

`srft.view.app.create_app` wraps them in the host guard (FastAPI resolves the route annotations from this module's
globals)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.staticfiles import StaticFiles

from srft.model import LABELS, Label
from srft.view.config import ANNOTATOR_RE, ViewConfig, static_dir
from srft.view.db import LabelsDB
from srft.view.pages import ListFilters, list_context, trajectory_context
from srft.view.security import COOKIE, Session, Sessions
from srft.view.store import Store, agreement, load_annotations


class LabelIn(BaseModel):
    """A label change posted by the page (label None clears the step)."""

    model_config = ConfigDict(extra="forbid")

    trajectory_id: str = Field(max_length=256)
    step: int = Field(ge=1)
    label: Label | None = None
    note: str | None = Field(None, max_length=20_000)


def _templates():
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("srft.view", "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.globals["LABELS"] = LABELS
    env.globals["KEYS"] = {lab: str(i + 1) for i, lab in enumerate(LABELS)}
    return env


class Viewer:
    """The app's state (store, annotations, database, sessions) and one method per route."""

    def __init__(self, config: ViewConfig):
        self.config = config
        self.store = Store(config.data)
        self.ann = load_annotations(self.store, config.annotations)
        self.db = LabelsDB(config.db_path())
        self.sessions = Sessions(config.annotator)
        self.env = _templates()
        self.masks = None
        if config.tokenizer is not None:
            from srft.view.masking import MaskView

            self.masks = MaskView(config.tokenizer, config.policy, config.mask_labels)

    # -- helpers -------------------------------------------------------------------------------------------
    def page(self, request: Request, template: str, context: Callable[[Session], dict[str, Any]]) -> HTMLResponse:
        """Render a page for the request's session (a new session, and its cookie, when it has none)."""
        sid = request.cookies.get(COOKIE)
        session = self.sessions.get(sid)
        fresh = session is None
        if fresh:
            sid, session = self.sessions.new()
        html = self.env.get_template(template).render(
            **context(session), csrf=session.csrf, annotator=session.annotator, data=str(self.config.data),
            db_path=str(self.db.path), path=request.url.path)
        response = HTMLResponse(html)
        if fresh:
            response.set_cookie(COOKIE, sid, httponly=True, samesite="strict", path="/")
        return response

    def authorised(self, request: Request, token: str | None) -> Session:
        session = self.sessions.get(request.cookies.get(COOKIE))
        if not Sessions.check(session, token):
            raise HTTPException(403, "missing or stale session token: reload the page")
        return session

    def live(self, annotator: str, trajectory_id: str) -> dict[str, Any]:
        """Agreement of the annotator's labels with each source: on this trajectory and over everything."""
        mine = self.db.labels(annotators=[annotator])
        here = [h for h in mine if h.trajectory_id == trajectory_id]
        mask = self.config.mask_labels
        return {"trajectory": agreement(here, self.ann, mask), "overall": agreement(mine, self.ann, mask),
                "labelled": len(here), "labelled_overall": len(mine)}

    # -- routes --------------------------------------------------------------------------------------------
    def index(self, request: Request) -> HTMLResponse:
        filters = ListFilters.from_query(request.query_params)
        return self.page(request, "index.html",
                         lambda s: list_context(self.store, self.ann, self.db.labels(), s.annotator, filters))

    def trajectory(self, request: Request, trajectory_id: str) -> HTMLResponse:
        traj = self.store.get(trajectory_id)
        if traj is None:
            raise HTTPException(404, f"no trajectory {trajectory_id!r} in {self.config.data}")
        human = self.db.labels(trajectory_id=trajectory_id)

        def context(s: Session) -> dict[str, Any]:
            return {**trajectory_context(self.store, traj, self.ann, human, s.annotator),
                    "live": self.live(s.annotator, trajectory_id), "mask_labels": self.config.mask_labels,
                    "masks": self.masks is not None, "policies": self.masks.policies() if self.masks else [],
                    "policy": self.config.policy}

        return self.page(request, "trajectory.html", context)

    def post_label(self, body: LabelIn, request: Request) -> dict[str, Any]:
        session = self.authorised(request, request.headers.get("x-csrf-token"))
        summary = self.store.by_id.get(body.trajectory_id)
        if summary is None:
            raise HTTPException(404, f"no trajectory {body.trajectory_id!r}")
        if body.step > summary.n_steps:
            raise HTTPException(422, f"step {body.step} out of range ({summary.n_steps} steps)")
        saved = self.db.set(body.trajectory_id, body.step, session.annotator, body.label, body.note)
        return {"saved": None if saved is None else asdict(saved), "annotator": session.annotator,
                **self.live(session.annotator, body.trajectory_id)}

    async def post_annotator(self, request: Request) -> RedirectResponse:
        form = await request.form()
        session = self.authorised(request, str(form.get("csrf", "")))
        name, back = str(form.get("name", "")).strip(), str(form.get("next", "/"))
        if not ANNOTATOR_RE.match(name):
            raise HTTPException(422, "annotator name: 1-64 letters, digits, spaces or . @ + - _")
        session.annotator = name
        safe = back.startswith("/") and not back.startswith("//") and "\\" not in back  # no open redirect
        return RedirectResponse(back if safe else "/", status_code=303)

    def mask(self, request: Request, trajectory_id: str, policy: str | None = None,
             source: str = "human") -> dict[str, Any]:
        from srft.view.masking import MaskViewError

        session = self.sessions.get(request.cookies.get(COOKIE))
        if self.masks is None:
            raise HTTPException(409, "no tokenizer: start `srft view` with --tokenizer DIR to see token masks")
        if session is None:
            raise HTTPException(403, "no session: reload the page")
        traj = self.store.get(trajectory_id)
        if traj is None:
            raise HTTPException(404, f"no trajectory {trajectory_id!r}")
        human = self.db.labels(trajectory_id=trajectory_id, annotators=[session.annotator])
        try:
            return self.masks.render(traj, policy or self.config.policy, source, human, self.ann)
        except MaskViewError as exc:
            raise HTTPException(422, str(exc)) from None


def _no_content() -> Response:  # browsers ask for /favicon.ico; "no content" keeps their consoles clean
    return Response(status_code=204)


def build_app(config: ViewConfig) -> FastAPI:
    v = Viewer(config)
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    app.mount("/static", StaticFiles(directory=static_dir()), name="static")
    app.add_api_route("/", v.index, methods=["GET"], response_class=HTMLResponse)
    app.add_api_route("/t/{trajectory_id}", v.trajectory, methods=["GET"], response_class=HTMLResponse)
    app.add_api_route("/api/label", v.post_label, methods=["POST"])
    app.add_api_route("/annotator", v.post_annotator, methods=["POST"])
    app.add_api_route("/api/mask/{trajectory_id}", v.mask, methods=["GET"])
    app.add_api_route("/favicon.ico", _no_content, methods=["GET"])
    app.add_api_route("/healthz", lambda: "ok", methods=["GET"], response_class=PlainTextResponse)
    return app
