"""A deterministic OpenAI-compatible critic server with fault injection, on real sockets.

Used by the tests (429/500/slow/truncated/non-JSON/wrong-count faults, the SIGKILL resume test) and by the
throughput benchmark; also runnable for demos: `python -m srft.testing.fake_openai --port 8011 --delay 0.5`.

It answers `POST /v1/chat/completions` with a valid critic answer for the steps the request asks about, read
from the answer's JSON schema in `response_format` (a request without one, such as a probe, gets "yes"). Every
step is labelled `good` unless the request's messages hold a hint `label@<step>:<name>` for it, written into a
trajectory by the test that built it. A hint may list several labels, `label@3:mistake,good,mistake`: a request
with `seed` s answers the (s mod n)-th (so K samples with seeds 0..K-1 vote over the list), and with
`logprobs: true` the label's token carries the list's shares as its top log-probabilities (unless the server was
started with `logprobs=False`, like servers that ignore the field). A `plan(request)` hook may return a `Reply`
to inject a fault instead; every request is recorded (with its attempt number and timing) for the tests to count.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from srft.critic.parse import schema_steps

_HINT = re.compile(r"label@(\d+):((?:good|unnecessary|mistake|recover)(?:,(?:good|unnecessary|mistake|recover))*)")
_TOKEN = re.compile(r"\w+|\s+|[^\w\s]")  # the fake tokenizer: words, runs of space, single symbols


@dataclass
class Request:
    body: dict[str, Any]
    headers: dict[str, str]
    started: float
    finished: float | None = None  # set when the reply was fully written
    status: int | None = None

    @property
    def prompt(self) -> str:
        return self.body["messages"][0]["content"]

    @property
    def attempt(self) -> int:
        return 0 if len(self.body["messages"]) == 1 else 1

    @property
    def steps(self) -> list[int]:
        fmt = self.body.get("response_format") or {}
        schema = fmt.get("schema") or (fmt.get("json_schema") or {}).get("schema")
        return schema_steps(schema) if schema else []

    def hints(self) -> dict[int, list[str]]:
        """step -> the labels its hint lists (in every message of the request: prompt and re-ask)."""
        text = "\n".join(str(m.get("content") or "") for m in self.body["messages"])
        return {int(m.group(1)): m.group(2).split(",") for m in _HINT.finditer(text)}


@dataclass
class Reply:
    status: int = 200
    body: bytes | None = None  # None: a valid critic answer
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    truncate: bool = False  # announce the full length, send half, close the connection
    content: str | None = None  # a 200 chat completion whose message content is this text


def answer_text(request: Request) -> str:
    """The valid answer: every asked step once, labelled by its hint (the seed picks among several) or `good`."""
    if not request.body.get("response_format"):
        return "yes"  # e.g. a probe for log-probabilities
    hints, seed = request.hints(), int(request.body.get("seed") or 0)
    steps = [{"step": n, "label": hints[n][seed % len(hints[n])] if n in hints else "good",
              "reason": f"step {n} judged"} for n in request.steps]
    return json.dumps({"steps": steps})


def token_logprobs(request: Request, content: str) -> list[dict[str, Any]]:
    """The answer's tokens in OpenAI's `logprobs.content` shape: a label token's alternatives are the labels its
    hint lists, with their shares; every other token is certain."""
    hints, k = request.hints(), int(request.body.get("top_logprobs") or 1)
    label_at = {m.end() for m in re.finditer(r'"label": "', content)}  # where json.dumps put each label value
    steps = iter(request.steps)
    out, pos = [], 0
    for token in _TOKEN.findall(content):
        share = {token: 1.0}
        if pos in label_at:
            listed = hints.get(next(steps, -1), [token])
            share = {lab: listed.count(lab) / len(listed) for lab in dict.fromkeys(listed)}
        pos += len(token)
        alternatives = sorted(share.items(), key=lambda kv: -kv[1])[:k]
        out.append({"token": token, "logprob": math.log(share.get(token, 1e-6)), "bytes": None,
                    "top_logprobs": [{"token": t, "logprob": math.log(p), "bytes": None} for t, p in alternatives]})
    return out


def completion_body(request: Request, content: str, logprobs: bool = True) -> bytes:
    choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": content},
                              "finish_reason": "stop"}
    if logprobs and request.body.get("logprobs"):
        choice["logprobs"] = {"content": token_logprobs(request, content)}
    return json.dumps({
        "id": "fake", "object": "chat.completion", "model": request.body.get("model"), "choices": [choice],
        "usage": {"prompt_tokens": len(request.prompt) // 4, "completion_tokens": len(content) // 4},
    }).encode()


class FakeCriticServer:
    """`with FakeCriticServer(delay_s=..., plan=...) as server: ... server.url ... server.requests`."""

    def __init__(self, *, delay_s: float = 0.0, plan: Callable[[Request], Reply | None] | None = None,
                 host: str = "127.0.0.1", port: int = 0, logprobs: bool = True):
        self.delay_s, self.plan, self.logprobs = delay_s, plan, logprobs
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer((host, port), self._handler())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def __enter__(self) -> FakeCriticServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def _reply(self, request: Request) -> Reply:
        reply = self.plan(request) if self.plan else None
        reply = reply or Reply()
        if reply.status == 200 and reply.body is None:
            content = reply.content if reply.content is not None else answer_text(request)
            reply.body = completion_body(request, content, self.logprobs)
        reply.delay_s = reply.delay_s or self.delay_s
        return reply

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out as two writes: no 40 ms delayed-ACK stall

            def log_message(self, *args: Any) -> None:  # keep test output clean
                return None

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                request = Request(json.loads(raw), dict(self.headers), time.monotonic())
                with server._lock:
                    server.requests.append(request)
                reply = server._reply(request)
                time.sleep(reply.delay_s)
                body = reply.body or b""
                try:
                    self.send_response(reply.status)
                    for k, v in {"Content-Type": "application/json", **reply.headers}.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body[:len(body) // 2] if reply.truncate else body)
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
                    return
                if reply.truncate:
                    self.close_connection = True
                    return
                request.status, request.finished = reply.status, time.monotonic()

        return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8011)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before each answer")
    args = parser.parse_args()
    with FakeCriticServer(delay_s=args.delay, host=args.host, port=args.port) as server:
        print(f"fake critic server on {server.url} (delay {args.delay}s); Ctrl-C to stop", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
