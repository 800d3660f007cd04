"""Any OpenAI-compatible chat endpoint as a critic backend: vLLM, SGLang, llama.cpp server, OpenAI.

Plain `httpx` POSTs to `{base_url}/chat/completions`, so every fault is ours to see and handle:
- retried with exponential backoff and full jitter (`min(cap, base * 2**n) * U(0, 1)`): 408, 409, 429, every
  5xx, timeouts, dropped connections, truncated bodies and 2xx bodies that are not a chat completion;
  `Retry-After` (seconds or an HTTP date) is honoured when present (capped by `retry_after_max_s`);
- not retried: other 4xx (a wrong model name or key does not get better by waiting).
Structured output: `structured=auto` first sends `response_format={"type": "json_schema", ...}` (OpenAI, vLLM,
SGLang); if the server rejects that with an error naming response_format/json_schema, it switches to
`{"type": "json_object", "schema": ...}` (llama-cpp-python), then to none, once for the whole run, and says so
in the report. The API key is read from the environment variable `api_key_env` and never logged or stored.
"""

from __future__ import annotations

import asyncio
import email.utils
import os
import random
import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from srft.critic import BackendError, Completion, CriticContext, Unreachable

RETRY_STATUS = {408, 409, 429}
MODES = ("json_schema", "json_object", "off")


class OpenAIConfig(BaseModel):
    """Options of the OpenAI-compatible backend."""

    model_config = ConfigDict(extra="forbid")

    base_url: str = Field("http://127.0.0.1:8000/v1", description="endpoint root, up to and including /v1")
    model: str = Field(description="model name as the server knows it")
    api_key_env: str = Field("OPENAI_API_KEY", description="environment variable holding the key (may be unset)")
    temperature: float = Field(0.0, ge=0.0, description="sampling temperature (0 = greedy, reproducible)")
    top_p: float | None = Field(None, gt=0.0, le=1.0, description="nucleus sampling; None = server default")
    seed: int | None = Field(None, description="sampling seed, for servers that honour it")
    max_tokens: int | None = Field(None, ge=1, description="answer cap; None = the prompt's per-window budget")
    structured: Literal["auto", "json_schema", "json_object", "off"] = Field(
        "auto", description="how to ask for schema-constrained output (see module doc)")
    timeout_s: float = Field(120.0, gt=0, description="seconds to wait for one response")
    max_retries: int = Field(6, ge=0, description="retries per call on 429/5xx/timeouts/bad bodies")
    backoff_base_s: float = Field(1.0, ge=0, description="first backoff step, doubled per retry")
    backoff_max_s: float = Field(60.0, ge=0, description="cap of one backoff wait")
    retry_after_max_s: float = Field(300.0, ge=0, description="cap on a server's Retry-After")
    extra_body: dict[str, Any] = Field(default_factory=dict, description="extra request fields, sent as given")


def retry_after_seconds(value: str | None) -> float | None:
    """Parse a Retry-After header: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class _Retry(Exception):
    def __init__(self, reason: str, wait: float | None = None):
        super().__init__(reason)
        self.wait = wait


class OpenAIBackend:
    """A `ChatBackend` over HTTP. One shared `httpx.AsyncClient` (connection pool sized to the concurrency)."""

    def __init__(self, config: OpenAIConfig, concurrency: int = 8):
        import httpx

        self.config = config
        self.id = f"openai:{config.model}"
        self.mode = "json_schema" if config.structured == "auto" else config.structured
        self.mode_changes: list[str] = []  # reported: each automatic downgrade of the structured mode
        self.retries = 0
        self.unreachable: str | None = None  # the connect probe's error: raised at the first uncached request
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(config.api_key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self._client = httpx.AsyncClient(
            base_url=config.base_url.rstrip("/"), headers=headers,
            timeout=httpx.Timeout(config.timeout_s, connect=min(config.timeout_s, 10.0)),
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency))

    def fingerprint(self) -> dict[str, Any]:
        c = self.config
        return {"backend": "openai", "model": c.model, "temperature": c.temperature, "top_p": c.top_p,
                "seed": c.seed, "max_tokens": c.max_tokens, "extra_body": c.extra_body}

    def _body(self, messages: list[dict[str, Any]], schema: dict[str, Any] | None, max_tokens: int,
              sample: int | None = None, logprobs: int = 0) -> dict:
        c = self.config
        body: dict[str, Any] = {"model": c.model, "messages": messages, "temperature": c.temperature,
                                "max_tokens": c.max_tokens or max_tokens}
        if c.top_p is not None:
            body["top_p"] = c.top_p
        if sample is not None:  # one of several answers to the same prompt: its own seed, reproducible
            body["seed"] = (c.seed or 0) + sample
        elif c.seed is not None:
            body["seed"] = c.seed
        if logprobs:
            body.update(logprobs=True, top_logprobs=logprobs)
        if schema is not None and self.mode == "json_schema":
            body["response_format"] = {"type": "json_schema",
                                       "json_schema": {"name": "step_labels", "schema": schema, "strict": True}}
        elif schema is not None and self.mode == "json_object":
            body["response_format"] = {"type": "json_object", "schema": schema}
        body.update(c.extra_body)
        return body

    def _backoff(self, attempt: int) -> float:
        c = self.config
        return min(c.backoff_max_s, c.backoff_base_s * 2 ** attempt) * random.random()

    async def complete(self, messages: list[dict[str, Any]], *, schema: dict[str, Any] | None,
                       max_tokens: int, sample: int | None = None, logprobs: int = 0) -> Completion:
        """`sample`: the index of one of several answers drawn for this prompt (seed = seed + sample);
        `logprobs`: ask for that many top log-probabilities per answer token."""
        if self.unreachable:
            raise Unreachable(self.unreachable)
        body = {"sample": sample, "logprobs": logprobs}
        attempt, last = 0, ""
        while True:
            try:
                return await self._once(messages, schema, max_tokens, **body)
            except _Retry as exc:
                last = str(exc)
                if attempt >= self.config.max_retries:
                    raise BackendError(f"gave up after {attempt + 1} attempts; last: {last}") from None
                wait = exc.wait if exc.wait is not None else self._backoff(attempt)
                attempt += 1
                self.retries += 1
                await asyncio.sleep(wait)

    async def _once(self, messages: list[dict[str, Any]], schema: dict[str, Any] | None,
                    max_tokens: int, **extra: Any) -> Completion:
        import httpx

        mode = self.mode  # concurrent requests may see the mode change while this one is in flight
        try:
            resp = await self._client.post("/chat/completions",
                                           json=self._body(messages, schema, max_tokens, **extra))
            body = resp.content  # read fully here: a truncated body raises inside the try
        except httpx.TimeoutException:
            raise _Retry(f"timed out after {self.config.timeout_s:g}s") from None
        except httpx.TransportError as exc:  # refused/reset connections, truncated bodies
            raise _Retry(f"{type(exc).__name__}: {exc}") from None
        status = resp.status_code
        # A refused response_format is permanent whatever the status (llama-cpp-python answers it with a 500).
        text = body[:500].decode(errors="replace")
        if status >= 400 and self._downgrade(mode, status, text, schema):
            return await self._once(messages, schema, max_tokens, **extra)
        if status >= 400 and schema is not None and mode != "off" and "response_format" in text.lower():
            raise BackendError(f"HTTP {status}: the server refused response_format {mode!r} ({text[:300]}); "
                               "set structured to auto, json_object or off")
        if status in RETRY_STATUS or status >= 500:
            wait = retry_after_seconds(resp.headers.get("retry-after"))
            wait = None if wait is None else min(wait, self.config.retry_after_max_s)
            raise _Retry(f"HTTP {status}: {text[:200]}", wait)
        if status >= 400:
            raise BackendError(f"HTTP {status} from {self.config.base_url}: {text}")
        return self._completion(resp, body)

    def _downgrade(self, used: str, status: int, text: str, schema: dict[str, Any] | None) -> bool:
        """Under structured=auto, step down one structured-output mode when the server refuses the one `used`
        (once: requests that were in flight with the same refused mode just retry with the new one)."""
        lowered = text.lower()
        if (self.config.structured != "auto" or schema is None or used == "off"
                or not any(w in lowered for w in ("response_format", "json_schema", "grammar"))):
            return False
        if used != self.mode:
            return True
        new = MODES[MODES.index(self.mode) + 1]
        self.mode_changes.append(f"{self.mode} -> {new} after HTTP {status}: {text[:160]}")
        self.mode = new
        return True

    @staticmethod
    def _completion(resp: Any, body: bytes) -> Completion:
        try:
            data = resp.json()
            choice = data["choices"][0]
            text = choice["message"].get("content") or ""  # null content (e.g. cut while reasoning) = no answer
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            raise _Retry(f"HTTP {resp.status_code} body is not a chat completion: "
                         f"{body[:200].decode(errors='replace')!r}") from None
        if not isinstance(text, str):
            raise _Retry(f"the completion content is {type(text).__name__}, not text")
        usage = data.get("usage") or {}
        logprobs = (choice.get("logprobs") or {}).get("content") if isinstance(choice.get("logprobs"), dict) else None
        return Completion(text=text, prompt_tokens=usage.get("prompt_tokens"),
                          completion_tokens=usage.get("completion_tokens"),
                          finish_reason=choice.get("finish_reason"),
                          logprobs=logprobs if isinstance(logprobs, list) and logprobs else None)

    async def aclose(self) -> None:
        await self._client.aclose()


def build(options: dict[str, Any], ctx: CriticContext) -> OpenAIBackend:
    config = OpenAIConfig(**options)
    backend = OpenAIBackend(config, concurrency=ctx.concurrency)
    try:
        probe_endpoint(config.base_url, min(3.0, config.timeout_s))
    except Unreachable as exc:  # not yet an error: every answer may be in the cache
        backend.unreachable = str(exc)
    return backend


def probe_endpoint(base_url: str, timeout_s: float = 3.0) -> None:
    """One short TCP connect before any call, so an unreachable endpoint fails the run in seconds instead of
    after every call's retries (minutes). Skipped when a proxy would carry the requests (httpx honours the
    *_PROXY variables; the proxy, not this machine, reaches the server). ValueError saying what to fix
    (Unreachable when nothing answers)."""
    import socket
    import urllib.request
    from urllib.parse import urlsplit

    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"base_url {base_url!r}: expected http(s)://HOST[:PORT]/v1")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    if parts.scheme in urllib.request.getproxies() and not urllib.request.proxy_bypass(parts.hostname):
        return
    try:
        socket.create_connection((parts.hostname, port), timeout=timeout_s).close()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise Unreachable(f"base_url {base_url}: cannot connect to {parts.hostname}:{port} ({reason}); start the "
                         "server or set -o base_url=http://HOST:PORT/v1") from None
