"""`srft view`'s options (`ViewConfig`) and where its static files are."""

from __future__ import annotations

import getpass
import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from srft.model import Label

LOOPBACK = ("127.0.0.1", "localhost", "[::1]")
ANNOTATOR_RE = re.compile(r"^[\w.@+-][\w .@+-]{0,63}$")


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

    @field_validator("policy")
    @classmethod
    def _policy(cls, value: str) -> str:  # checked before serving, not on the first mask-view request
        from srft.policy import get_policy
        from srft.registry import RegistryError

        try:
            get_policy(value)
        except RegistryError as exc:
            raise ValueError(str(exc)) from None
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


def static_dir() -> Path:
    return Path(__file__).parent / "static"
